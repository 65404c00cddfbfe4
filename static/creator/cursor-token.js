/* The all-projects stream's cursor token (projects/cursors.py): where the client stands in each project's log.
 * base64url (no padding) of a format byte (1), then per project its id's 16 bytes and its seq as an unsigned
 * LEB128 varint. The page reads one to move the open project's cursor back, so its log is sent again. */

const FORMAT = 1;

/* The token's `Map(project id → seq)`, or null if it is not one. */
export function decodeToken(token) {
  let raw;
  try {
    const text = token.replace(/-/g, "+").replace(/_/g, "/");
    raw = Uint8Array.from(atob(text + "=".repeat((4 - (text.length % 4)) % 4)), (char) => char.charCodeAt(0));
  } catch (error) {
    return null;
  }
  if (raw[0] !== FORMAT) return null;
  const cursors = new Map();
  let at = 1;
  while (at + 17 <= raw.length) {
    const hex = Array.from(raw.slice(at, at + 16), (byte) => byte.toString(16).padStart(2, "0")).join("");
    const id = [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
    at += 16;
    // Multiplying, not shifting: a seq may pass the 32 bits JavaScript's shifts work in.
    let [seq, scale, byte] = [0, 1, 0x80];
    while (byte & 0x80 && at < raw.length) {
      byte = raw[at++];
      seq += (byte & 0x7f) * scale;
      scale *= 128;
    }
    cursors.set(id, seq);
  }
  return at === raw.length ? cursors : null;
}

export function encodeToken(cursors) {
  const bytes = [FORMAT];
  for (const [id, seq] of cursors) {
    const hex = id.replace(/-/g, "");
    for (let at = 0; at < 32; at += 2) bytes.push(parseInt(hex.slice(at, at + 2), 16));
    let rest = seq;
    for (;;) {
      const low = rest % 128;
      rest = Math.floor(rest / 128);
      if (!rest) {
        bytes.push(low);
        break;
      }
      bytes.push(low | 0x80);
    }
  }
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte); // no spread: a long map would pass the argument limit
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
