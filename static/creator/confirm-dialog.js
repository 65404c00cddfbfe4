/* Asking before something that cannot be undone: a modal <dialog> whose form answers "confirm" or not.
 * Escape, or any other button, answers no. `words` fill the dialog's [data-slot] elements first. */

export function confirmDialog(dialog, words = {}) {
  for (const [slot, text] of Object.entries(words)) {
    for (const node of dialog.querySelectorAll(`[data-slot="${slot}"]`)) node.textContent = text;
  }
  return new Promise((resolve) => {
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
  });
}
