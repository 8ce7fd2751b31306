// Reading a form's fields (JSON and numbers), and showing errors under the field they concern.

// The request fields an error's loc can point at (its first segment); others are shown on the form.
const FIELDS = new Set([
  "input", "image", "kernel", "padding", "stride", "bias",
  "target", "target_kernel", "pairs", "kernel_size", "kernel_shape", "lr", "epochs", "seed",
  "optimizer", "momentum", "loss", "tolerance", "batch_size", "shuffle",
]);

/** JSON text: an array, a number, [a, b] or a list of pairs. */
export function json(field) {
  try {
    return JSON.parse(field.value);
  } catch (error) {
    throw new Error(`This is not valid JSON: ${error.message}`);
  }
}

/** A number from an <input type="number">. */
export function number(field) {
  if (field.validity.badInput) throw new Error("This is not a number.");
  return field.valueAsNumber;
}

/** The chosen option of a <select>. */
export const text = (field) => field.value;

/**
 * The form's fields named in `parsers`, each parsed by its parser; empty and disabled fields are left out (the API
 * has defaults or says what is missing). Returns {values, errors}, errors as [{field, msg}] for showErrors.
 */
export function readFields(form, parsers) {
  const values = {};
  const errors = [];
  for (const [name, parse] of Object.entries(parsers)) {
    const field = form.elements.namedItem(name);
    if (field.disabled || (field.value.trim() === "" && !field.validity.badInput)) continue;
    try {
      values[name] = parse(field);
    } catch (error) {
      errors.push({ field, msg: error.message });
    }
  }
  return { values, errors };
}

/** Show an API error: each of its `errors` under its field (/kernel/0/1: the kernel field), the rest on the form. */
export function showApiError(form, error) {
  const fieldErrors = [];
  const others = [];
  for (const { loc, msg } of error.errors) {
    const name = loc.split("/")[1];
    const field = FIELDS.has(name) ? form.elements.namedItem(name) : null;
    if (field instanceof HTMLElement && !field.closest("[hidden]")) {
      fieldErrors.push({ field, msg: loc === `/${name}` ? msg : `${msg} (at ${loc})` });
    } else {
      others.push(msg);
    }
  }
  const unplaced = others.length ? `${error.message}: ${others.join("; ")}` : error.message;
  showErrors(form, fieldErrors, others.length || !fieldErrors.length ? unplaced : "");
}

/** Show [{field, msg}] under their fields (role=alert, aria-describedby, aria-invalid), `formMessage` on the form. */
export function showErrors(form, fieldErrors, formMessage = "") {
  clearErrors(form);
  const byField = new Map();
  for (const { field, msg } of fieldErrors) byField.set(field, [...(byField.get(field) ?? []), msg]);
  for (const [field, messages] of byField) {
    const message = document.createElement("p");
    Object.assign(message, { id: `${field.id}-error`, className: "field-error", textContent: messages.join("\n") });
    message.setAttribute("role", "alert");
    field.closest(".field").append(message);
    field.setAttribute("aria-describedby", `${field.getAttribute("aria-describedby") ?? ""} ${message.id}`.trim());
    field.setAttribute("aria-invalid", "true");
  }
  showFormMessage(form, formMessage);
  byField.keys().next().value?.focus();
}

export function clearErrors(form) {
  for (const message of form.querySelectorAll(".field-error")) {
    const field = document.getElementById(message.id.replace(/-error$/, ""));
    const others = field.getAttribute("aria-describedby").split(" ").filter((id) => id !== message.id);
    if (others.length) field.setAttribute("aria-describedby", others.join(" "));
    else field.removeAttribute("aria-describedby");
    field.removeAttribute("aria-invalid");
    message.remove();
  }
  showFormMessage(form, "");
}

function showFormMessage(form, text) {
  const formError = form.querySelector(".form-error");
  formError.textContent = text;
  formError.hidden = !text;
}
