// The folder source's JSON List parse (src/sources/json-list.ts): items are parsed one at a time, and the
// result must be exactly JSON.parse's — the same values for valid text, the same SyntaxError for invalid text.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { LazyItems, ListSplitter, parseJsonLazily } from "../src/sources/json-list.js";

/** The value with every LazyItems read out, as JSON.parse would have built it. */
function materialize(v: unknown): unknown {
  if (v instanceof LazyItems) return Array.from({ length: v.length }, (_, i) => materialize(v.item(i)));
  if (Array.isArray(v)) return v.map(materialize);
  if (v !== null && typeof v === "object")
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, materialize(x)]));
  return v;
}

function outcome(f: () => unknown): { value?: string; error?: string } {
  try {
    return { value: JSON.stringify(f()) };
  } catch (err) {
    return { error: String(err) };
  }
}

/** List-shaped documents: "items" among other keys, in any order, with any JSON inside, and any indentation. */
const listText = fc
  .record({
    items: fc.array(fc.jsonValue(), { maxLength: 8 }),
    before: fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 3 }),
    after: fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 3 }),
    indent: fc.constantFrom(undefined, 0, 1, 2, "\t"),
  })
  .map(({ items, before, after, indent }) => {
    const doc: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(before)) if (k !== "items") doc[k] = v;
    doc.items = items;
    for (const [k, v] of Object.entries(after)) if (!(k in doc) && k !== "items") doc[k] = v;
    return JSON.stringify(doc, null, indent);
  });

test("a List-shaped JSON text parses to exactly JSON.parse's value", () => {
  fc.assert(
    fc.property(listText, (text) => {
      assert.deepEqual(
        outcome(() => materialize(parseJsonLazily(text))),
        outcome(() => JSON.parse(text)),
      );
    }),
    { numRuns: 500 },
  );
});

test("a cut or altered List fails with JSON.parse's own SyntaxError (or parses as JSON.parse does)", () => {
  fc.assert(
    fc.property(listText, fc.nat(), fc.constantFrom("", ",", "}", "]", '"', "\\", "x"), (text, at, insert) => {
      const i = at % (text.length + 1);
      for (const bad of [text.slice(0, i), text.slice(0, i) + insert + text.slice(i)])
        assert.deepEqual(
          outcome(() => materialize(parseJsonLazily(bad))),
          outcome(() => JSON.parse(bad)),
        );
    }),
    { numRuns: 500 },
  );
});

test("items are parsed when read: a List's item is not an object before it is asked for", () => {
  const v = parseJsonLazily('{"apiVersion":"v1","items":[{"a":1},{"b":2}],"kind":"List"}') as { items: unknown };
  assert.ok(v.items instanceof LazyItems);
  assert.equal(v.items.length, 2);
  assert.deepEqual(v.items.item(1), { b: 2 });
});

// The reflector's list pages (ListSplitter): items handed over as their text arrives, in any chunking.
function splitInChunks(text: string, cuts: number[]): { value: unknown; items: string[] } {
  const items: string[] = [];
  const sp = new ListSplitter((t) => items.push(t));
  let at = 0;
  for (const c of [...cuts].sort((a, b) => a - b)) {
    sp.write(text.slice(at, Math.max(at, c)));
    at = Math.max(at, c);
  }
  sp.write(text.slice(at));
  const env = sp.end() as Record<string, unknown>;
  if ("items" in env) env.items = items.map((t) => JSON.parse(t) as unknown);
  return { value: env, items };
}

const objectListText = fc
  .record({
    items: fc.array(fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 4 }), { maxLength: 6 }),
    meta: fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 3 }),
    indent: fc.constantFrom(undefined, 0, 2, "\t"),
  })
  .map(({ items, meta, indent }) => JSON.stringify({ metadata: meta, items, after: meta }, null, indent));

test("a list page split in any chunks hands over each item, and the envelope and items are JSON.parse's", () => {
  fc.assert(
    fc.property(objectListText, fc.array(fc.nat(), { maxLength: 12 }), (text, cuts) => {
      const want = JSON.parse(text) as { items: unknown[] };
      const got = splitInChunks(
        text,
        cuts.map((c) => c % (text.length + 1)),
      );
      assert.deepEqual(got.value, want);
      assert.equal(got.items.length, want.items.length);
    }),
    { numRuns: 400 },
  );
});

test("a list page that is not one JSON object with object items is refused", () => {
  for (const bad of ["[1]", '{"items":[1]}', '{"items":[{"a":1}', "{} {}", "<html>", '{"items":[{}],"items":[{}]}'])
    assert.throws(() => splitInChunks(bad, [1, 3]), SyntaxError, bad);
  // An item is handed over as soon as its text is complete, before the rest of the page has arrived.
  const seen: string[] = [];
  const sp = new ListSplitter((t) => seen.push(t));
  sp.write('{"metadata":{"resourceVersion":"5"},"items":[{"a":"}\\""},');
  assert.deepEqual(seen, ['{"a":"}\\""}']);
  sp.write('{"b":1}]}');
  assert.deepEqual(sp.end(), { metadata: { resourceVersion: "5" }, items: [] });
});
