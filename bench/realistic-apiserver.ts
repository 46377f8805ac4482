// The test API server (test/apiserver) holding N realistic Services × E endpoints (bench/realistic-objects.ts),
// listening on HOST:PORT; run by bench/realistic-serve.ts inside the lab node's namespace, so the daemon reads it
// straight over loopback. Prints "ready" once it listens; exits when its stdin closes.
//   node --import tsx bench/realistic-apiserver.ts N E HOST PORT
import { startApiServer } from "../test/apiserver/index.js";
import { nodeObject, realisticService, realisticSlice } from "./realistic-objects.js";

const [n, e, host, port] = process.argv.slice(2);
const api = await startApiServer({ host: host!, port: Number(port), serviceCIDRs: ["10.96.0.0/12"] });
api.store.create(nodeObject());
for (let i = 0; i < Number(n); i++) {
  // Stored as given, without the API server's validation: its ClusterIP allocator walks every Service per create
  // (O(n²) to fill); each Service already carries what the allocator would set.
  api.store.create(realisticService(i), { skipValidation: true });
  api.store.create(realisticSlice(i, Number(e)));
}
const one = JSON.stringify(realisticService(0)).length + JSON.stringify(realisticSlice(0, Number(e))).length;
console.log(`ready ${one}`);
process.stdin.on("end", () => void api.stop().then(() => process.exit(0))).resume();
setInterval(() => {
  const lists = api.countRequests({ verb: "list" });
  process.stderr.write(`lists ${lists}\n`);
}, 5000).unref();
