/* Asking before something that cannot be undone: a modal <dialog> whose form answers "confirm" or not.
 * Escape, or any other button, answers no. */

export function confirmDialog(dialog) {
  return new Promise((resolve) => {
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
  });
}
