// Attest's own behaviour, kept in a file for the Content-Security-Policy (no inline
// scripts or onchange= attributes). Pages work without it: forms keep a submit button
// inside <noscript>.
"use strict";

// A form marked data-autosubmit is sent as soon as one of its fields changes.
document.addEventListener("change", (event) => {
  const form = event.target.closest && event.target.closest("form[data-autosubmit]");
  if (form) {
    form.requestSubmit();
  }
});
