// Duplicate keys in JSON text. JSON.parse keeps the last of two equal keys without a word, so a file
// could show one tensor entry to this reader and another to a different one; we scan the text for them.

/**
 * The first key that appears twice in one object of `text`, or null. `text` must already be valid
 * JSON (JSON.parse accepted it): the scan only tracks strings, nesting and commas. Keys are compared
 * after unescaping, so "a" and "\u0061" are the same key.
 */
export function findDuplicateKey(text: string): string | null {
  // One frame per open object or array; arrays have no key set.
  const frames: { keys: Set<string> | null; expectKey: boolean }[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const start = i++;
      let escaped = false;
      for (let d = text.charCodeAt(i); d !== 0x22; d = text.charCodeAt(++i)) {
        if (d === 0x5c /* \ */) { escaped = true; i++; }
      }
      const top = frames[frames.length - 1];
      if (top?.keys && top.expectKey) {
        const key = escaped ? (JSON.parse(text.slice(start, i + 1)) as string) : text.slice(start + 1, i);
        if (top.keys.has(key)) return key;
        top.keys.add(key);
        top.expectKey = false;
      }
    } else if (c === 0x7b /* { */) {
      frames.push({ keys: new Set(), expectKey: true });
    } else if (c === 0x5b /* [ */) {
      frames.push({ keys: null, expectKey: false });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      frames.pop();
    } else if (c === 0x2c /* , */) {
      const top = frames[frames.length - 1];
      if (top?.keys) top.expectKey = true;
    }
  }
  return null;
}
