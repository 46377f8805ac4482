// A JSON manifest parsed without holding all of it as objects at once. `kubectl get -o json` and generated
// manifests are one `List` whose `items` hold every object: JSON.parse of the whole file makes every raw object
// live at once before the first is validated (30k Services × 10 endpoints: 75 MB of text, several times that in
// objects). Here a scan finds where each item's text starts and ends, the envelope is parsed with `items` empty,
// and each item is parsed only when the caller reads it, so a raw item is garbage once validated.
//
// Why not a streaming parser from npm: @streamparser/json took 15 s for that file against JSON.parse's 2.8 s
// (measured on this machine, 2026-12-07), and token-stream ones (stream-json) are slower still. The scan only
// finds boundaries; JSON.parse still checks every byte of every item and of the envelope, and anything the
// scan does not recognise is parsed whole as before, so the result is exactly JSON.parse's.

/** Offsets of the top-level "items" array ([start, end) of "[...]") and of each element in it. */
interface ItemSpans {
  arrayStart: number;
  arrayEnd: number;
  /** start0, end0, start1, end1, … */
  items: number[];
}

const isWs = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

/** Index after the string starting at i (text[i] === '"'); -1 when unterminated. */
function skipString(t: string, i: number): number {
  for (let j = i + 1; j < t.length; j++) {
    const c = t.charCodeAt(j);
    if (c === 0x5c)
      j++; // backslash: the next character is escaped
    else if (c === 0x22) return j + 1;
  }
  return -1;
}

/** Index after the value starting at i (no leading whitespace); -1 when it does not end. */
function skipValue(t: string, i: number): number {
  const c = t.charCodeAt(i);
  if (c === 0x22) return skipString(t, i);
  if (c === 0x7b || c === 0x5b) {
    let depth = 0;
    for (let j = i; j < t.length; j++) {
      const d = t.charCodeAt(j);
      if (d === 0x22) {
        j = skipString(t, j) - 1;
        if (j < 0) return -1;
      } else if (d === 0x7b || d === 0x5b) depth++;
      else if (d === 0x7d || d === 0x5d) {
        if (--depth === 0) return j + 1;
      }
    }
    return -1;
  }
  // A number, true, false or null: up to the next delimiter.
  let j = i;
  while (j < t.length) {
    const d = t.charCodeAt(j);
    if (d === 0x2c || d === 0x7d || d === 0x5d || isWs(d)) break;
    j++;
  }
  return j > i ? j : -1;
}

function skipWs(t: string, i: number): number {
  while (i < t.length && isWs(t.charCodeAt(i))) i++;
  return i;
}

/** Where the items of a top-level object's "items" array are; undefined when the text is not shaped so. */
function itemSpans(t: string): ItemSpans | undefined {
  let i = skipWs(t, 0);
  if (t.charCodeAt(i) !== 0x7b) return undefined;
  i = skipWs(t, i + 1);
  let found: ItemSpans | undefined;
  while (t.charCodeAt(i) === 0x22) {
    const keyEnd = skipString(t, i);
    if (keyEnd < 0) return undefined;
    const isItems = t.slice(i, keyEnd) === '"items"';
    i = skipWs(t, keyEnd);
    if (t.charCodeAt(i) !== 0x3a) return undefined;
    i = skipWs(t, i + 1);
    if (isItems && t.charCodeAt(i) === 0x5b) {
      if (found) return undefined; // "items" twice: JSON.parse keeps the last; leave that to it
      const spans: number[] = [];
      const arrayStart = i;
      i = skipWs(t, i + 1);
      if (t.charCodeAt(i) !== 0x5d) {
        for (;;) {
          const end = skipValue(t, i);
          if (end < 0) return undefined;
          spans.push(i, end);
          i = skipWs(t, end);
          const c = t.charCodeAt(i);
          if (c === 0x5d) break;
          if (c !== 0x2c) return undefined;
          i = skipWs(t, i + 1);
        }
      }
      i++;
      found = { arrayStart, arrayEnd: i, items: spans };
    } else {
      const end = skipValue(t, i);
      if (end < 0) return undefined;
      i = end;
    }
    i = skipWs(t, i);
    if (t.charCodeAt(i) === 0x2c) i = skipWs(t, i + 1);
    else break;
  }
  return found;
}

/**
 * The JSON text's value. When it is an object with an "items" array, that array is a LazyItems: its elements
 * are parsed one by one as read. Throws JSON.parse's SyntaxError for invalid JSON (also when found in an item).
 */
export function parseJsonLazily(text: string): unknown {
  const spans = itemSpans(text);
  if (!spans || spans.items.length === 0) return JSON.parse(text);
  let envelope: unknown;
  try {
    envelope = JSON.parse(text.slice(0, spans.arrayStart) + "[]" + text.slice(spans.arrayEnd));
  } catch {
    return JSON.parse(text); // throws, with the position in the file
  }
  (envelope as { items: unknown }).items = new LazyItems(text, spans.items);
  return envelope;
}

/** The elements of a JSON array, each parsed when read (once): read them in order and drop each. */
export class LazyItems {
  constructor(
    private readonly text: string,
    private readonly spans: number[],
  ) {}

  get length(): number {
    return this.spans.length >> 1;
  }

  item(i: number): unknown {
    const s = this.text.slice(this.spans[2 * i], this.spans[2 * i + 1]);
    try {
      return JSON.parse(s);
    } catch (err) {
      JSON.parse(this.text); // the whole text's error names the position in the file
      throw err; // (not reached unless the scan was wrong about the boundaries)
    }
  }
}

/**
 * A JSON list response split as it arrives (the reflector's list pages): each element of the top-level
 * "items" array is handed over as its text is complete, so neither the page's text (megabytes, in V8's
 * large-object space until the next full collection) nor its raw objects are held at once; only the current
 * element's text and the envelope (everything but the elements) are kept. `end()` parses the envelope, with
 * `items` empty. Elements must be objects (list items are); anything else, or text that is not a JSON object,
 * throws. Each element and the envelope are checked by JSON.parse; the scan checks what lies between elements.
 */
export class ListSplitter {
  /** Nesting depth at the current position ({ and [). */
  private depth = 0;
  private inString = false;
  /** The previous chunk ended inside a string on an unpaired backslash. */
  private escaped = false;
  /** Inside the top-level "items" array (depth 2 is its level). */
  private inItems = false;
  private itemsSeen = false;
  /** At depth 1: the next string is a key; its text when it is (short keys only: we look for "items"). */
  private expectKey = false;
  private key: string | undefined;
  private lastKey = "";
  private afterColon = false;
  private envelope = "";
  private item = "";
  private started = false;

  constructor(private readonly onItem: (text: string) => void) {}

  write(t: string): void {
    let segStart = 0; // start of the text not yet copied into envelope or item
    const inElement = () => this.inItems && this.depth >= 3;
    const flush = (to: number) => {
      if (to <= segStart) return;
      if (inElement()) this.item += t.slice(segStart, to);
      else this.envelope += t.slice(segStart, to);
      segStart = to;
    };
    let i = 0;
    if (this.inString && this.escaped) {
      this.escaped = false;
      i = 1;
    }
    while (i < t.length) {
      if (this.inString) {
        let q = t.indexOf('"', i);
        while (q >= 0) {
          let b = 0;
          while (q - 1 - b >= i && t.charCodeAt(q - 1 - b) === 0x5c) b++;
          if (b % 2 === 0) break;
          q = t.indexOf('"', q + 1);
        }
        if (q < 0) {
          if (this.key !== undefined) this.key += t.slice(i);
          let b = 0;
          while (t.length - 1 - b >= i && t.charCodeAt(t.length - 1 - b) === 0x5c) b++;
          this.escaped = b % 2 === 1;
          break; // the rest of the chunk is inside the string
        }
        if (this.key !== undefined) {
          this.lastKey = this.key + t.slice(i, q);
          this.key = undefined;
        }
        this.inString = false;
        i = q + 1;
        continue;
      }
      const c = t.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) {
        i++;
        continue;
      }
      if (this.depth === 0) {
        if (c !== 0x7b || this.started) throw new SyntaxError("a list response is not one JSON object");
        this.started = true;
      }
      if (this.inItems && this.depth === 2) {
        // Between elements: only ",", "]" or the "{" that opens the next element.
        if (c === 0x2c) {
          i++;
          segStart = i;
          continue;
        }
        if (c === 0x5d) {
          this.inItems = false;
          this.depth = 1;
          segStart = i; // the "]" goes into the envelope: "items":[]
          i++;
          continue;
        }
        if (c !== 0x7b) throw new SyntaxError("a list item is not a JSON object");
        flush(i);
        segStart = i;
        this.depth = 3;
        i++;
        continue;
      }
      if (c === 0x22) {
        this.inString = true;
        if (this.depth === 1 && this.expectKey) {
          this.key = "";
          this.expectKey = false;
        }
        this.afterColon = false;
        i++;
        continue;
      }
      if (c === 0x3a) {
        if (this.depth === 1) this.afterColon = true;
        i++;
        continue;
      }
      if (c === 0x7b || c === 0x5b) {
        if (this.depth === 1 && this.afterColon && c === 0x5b && this.lastKey === "items") {
          if (this.itemsSeen) throw new SyntaxError('a list response has "items" twice');
          this.itemsSeen = this.inItems = true;
          this.depth = 2;
          i++;
          flush(i); // "[" into the envelope
          segStart = i;
          continue;
        }
        this.afterColon = false;
        this.depth++;
        if (this.depth === 1) this.expectKey = true;
        i++;
        continue;
      }
      if (c === 0x7d || c === 0x5d) {
        i++;
        if (this.inItems && this.depth === 3) {
          flush(i); // the element's closing brace, while still inside it
          this.depth = 2;
          const text = this.item;
          this.item = "";
          this.onItem(text);
        } else this.depth--;
        continue;
      }
      if (c === 0x2c && this.depth === 1) this.expectKey = true;
      this.afterColon = false;
      i++;
    }
    flush(t.length);
  }

  /** The envelope, parsed (items: [] when there were any); throws when the text ended inside an element. */
  end(): unknown {
    if (this.inItems || this.item !== "") throw new SyntaxError("a list response ended inside its items");
    return JSON.parse(this.envelope);
  }
}
