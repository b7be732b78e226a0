"""A decision's dossier: the decision with everything known about it (its explanations,
feedback, review case, outcomes, seal), and the search over decisions that filters on
them. It composes the apps below it (decisions, explain, reviews), so it sits above
them: the search API and pages, the decision page and the decision's API detail."""
