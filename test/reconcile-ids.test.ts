// Id reuse within a pass: a slot or conntrack entry that still names a backend (or a rev-NAT id)
// being removed in this pass must never, mid-pass, name a different backend. The id allocator
// rotates, so reuse can only happen once the cursor wraps; these tests put the cursor at the top
// of the id space (as a restart with a high id in the pins does) so that the next id wraps onto the
// one being freed. An implementation that frees before it allocates hands that id straight out.
import { test } from "node:test";
import assert from "node:assert/strict";
import { FakeMap } from "../src/native/fake-map.js";
import { LbReconciler, type LbMaps } from "../src/dataplane/bpf/reconcile.js";
import { backend, revNat, svcKey, svcValue, u32Key, MAP_CODECS, MAP_NAMES } from "../src/dataplane/bpf/abi.js";
import { MAX_BACKEND_ID, MAX_REV_NAT_ID } from "../src/dataplane/bpf/desired.js";
import type { BackendModel, Frontend, NodeModel } from "../src/model/types.js";

function maps(): LbMaps {
  const mk = (name: keyof typeof MAP_CODECS) =>
    new FakeMap({
      name,
      keySize: MAP_CODECS[name].key.size,
      valueSize: MAP_CODECS[name].value.size,
      maxEntries: 65536,
    });
  return {
    services: mk(MAP_NAMES.services),
    backends: mk(MAP_NAMES.backends),
    revNat: mk(MAP_NAMES.revNat),
    svcMeta: mk(MAP_NAMES.svcMeta),
    maglev: mk(MAP_NAMES.maglev),
    affinityMatch: mk(MAP_NAMES.affinityMatch),
    services6: mk(MAP_NAMES.services6),
    backends6: mk(MAP_NAMES.backends6),
  };
}

const be = (address: string): BackendModel => ({ address, port: 8080, state: "active", nodeLocal: true });
const fe = (address: string, backends: BackendModel[]): Frontend => ({
  service: "default/web",
  portName: "http",
  type: "ClusterIP",
  address,
  port: 80,
  protocol: "TCP",
  scope: "internal",
  sessionAffinity: { type: "None" },
  algorithm: "random",
  backends,
});
const model = (frontends: Frontend[]): NodeModel => ({
  node: "node-a",
  frontends,
  extras: frontends.map(() => ({ retainedBackends: [], sourceRanges: [] })),
});

function backendIds(m: LbMaps): Map<string, number> {
  const out = new Map<string, number>();
  const { keys, values, count } = m.backends.entries();
  for (let i = 0; i < count; i++) out.set(backend.decode(values, i * backend.size).address, u32Key.decode(keys, i * 4));
  return out;
}

/** Backend ids the slots of a frontend point at, and its rev-NAT id. */
function frontendIds(m: LbMaps, address: string): { revNatId: number; backendIds: number[] } {
  const { keys, values, count } = m.services.entries();
  let revNatId = -1;
  const ids: number[] = [];
  for (let i = 0; i < count; i++) {
    const k = svcKey.decode(keys, i * svcKey.size);
    if (k.address !== address) continue;
    const v = svcValue.decode(values, i * svcValue.size);
    if (k.slot === 0) revNatId = v.revNatId;
    else ids.push(v.backendId);
  }
  return { revNatId, backendIds: ids };
}

test("a backend id freed in a pass is not handed to a new backend in the same pass, even when the cursor wraps", async () => {
  const m = maps();
  const first = new LbReconciler(m);
  await first.restore();
  await first.apply(model([fe("10.96.0.10", [be("10.244.1.5")])]));
  const oldId = backendIds(m).get("10.244.1.5")!;
  assert.equal(oldId, 1);
  // A leftover from an earlier run at the top of the id space: after a restart the cursor sits there.
  m.backends.update(
    u32Key.encode(MAX_BACKEND_ID),
    backend.encode({ address: "10.244.9.9", port: 8080, proto: 6, flags: 0 }),
  );

  const second = new LbReconciler(m);
  await second.restore();
  await second.apply(model([fe("10.96.0.10", [be("10.244.1.9")])]));
  const ids = backendIds(m);
  assert.deepEqual([...ids.keys()], ["10.244.1.9"], "the old backend and the leftover are gone");
  assert.notEqual(
    ids.get("10.244.1.9"),
    oldId,
    "the new backend must not take the id of the one removed in the same pass",
  );
  assert.deepEqual(frontendIds(m, "10.96.0.10").backendIds, [ids.get("10.244.1.9")]);

  // The next pass may reuse it: nothing refers to it any more.
  await second.apply(model([fe("10.96.0.10", [be("10.244.1.10")])]));
  assert.ok(backendIds(m).has("10.244.1.10"));
});

test("a rev-NAT id freed in a pass is not handed to a new frontend in the same pass, even when the cursor wraps", async () => {
  const m = maps();
  const first = new LbReconciler(m);
  await first.restore();
  await first.apply(model([fe("10.96.0.10", [be("10.244.1.5")])]));
  const oldRevNat = frontendIds(m, "10.96.0.10").revNatId;
  assert.equal(oldRevNat, 1);
  // An orphan rev-NAT entry (interrupted pass of an earlier run) at the top of the id space.
  m.revNat.update(u32Key.encode(MAX_REV_NAT_ID), revNat.encode({ address: "10.96.9.9", port: 80 }));

  const second = new LbReconciler(m);
  await second.restore();
  await second.apply(model([fe("10.96.0.11", [be("10.244.1.5")])]));
  const now = frontendIds(m, "10.96.0.11").revNatId;
  assert.ok(now > 0);
  assert.notEqual(now, oldRevNat, "replies of the removed frontend's flows must not be rewritten to the new frontend");
  assert.equal(frontendIds(m, "10.96.0.10").revNatId, -1);
});
