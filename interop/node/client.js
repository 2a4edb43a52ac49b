// A shelfrank client in another language, built from proto/ only.
// Usage: node client.js HOST:PORT '{"history": ["book1", "book2"], "similar_to": "book3", "rank": ["shoe1", "book1"]}'
// Prints one JSON object describing what each call returned; exits non-zero on surprises.
"use strict";
const path = require("path");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "proto");
const definition = loader.loadSync("shelfrank/v1/recommender.proto", {
  includeDirs: [PROTO_ROOT],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
});
const { Recommender } = grpc.loadPackageDefinition(definition).shelfrank.v1;

const [address, scenarioJson] = process.argv.slice(2);
const scenario = JSON.parse(scenarioJson);
const client = new Recommender(address, grpc.credentials.createInsecure());

function call(method, request) {
  return new Promise((resolve) => {
    const deadline = new Date(Date.now() + 10000);
    client[method](request, { deadline }, (error, response) => {
      resolve(error ? { error: { code: error.code, details: error.details } } : { response });
    });
  });
}

async function main() {
  const out = {};
  const user = `node-user-${process.pid}`;
  out.info = await call("GetModelInfo", {});
  out.upsert = await call("UpsertItems", {
    items: [{ item_id: "node-item", features: ["brand=from-node", "category=books"] }],
  });
  const events = scenario.history.map((item, i) => ({
    event_id: `${user}-${i}`, user_id: user, item_id: item, type: "VIEW", timestamp_ms: Date.now(),
  }));
  out.track = await call("Track", { events });
  out.replay = await call("Track", { events });
  out.recommend = await call("Recommend", { user_id: user, k: 5 });
  out.filtered = await call("Recommend", {
    user_id: user, k: 5, filters: [{ any_of: ["brand=from-node"] }],
  });
  out.explained = await call("Recommend", { user_id: user, k: 3, explain: true, diversity: 0.3 });
  out.unavailable = await call("SetAvailability", { item_ids: ["node-item", "nope"], available: false });
  out.after_unavailable = await call("Recommend", {
    user_id: user, k: 5, filters: [{ any_of: ["brand=from-node"] }],
  });
  out.similar = await call("SimilarItems", { item_id: scenario.similar_to, k: 3 });
  out.similar_unknown = await call("SimilarItems", { item_id: "no-such-item", k: 3 });
  out.rank = await call("Rank", { user_id: user, item_ids: scenario.rank });
  out.bad_k = await call("Recommend", { user_id: user, k: 0 });
  out.upsert_user = await call("UpsertUsers", { users: [{ user_id: user, features: ["segment=node"] }] });
  out.delete = await call("DeleteUser", { user_id: user });
  out.after_delete = await call("Recommend", { user_id: user, k: 3 });
  process.stdout.write(JSON.stringify(out) + "\n");
  client.close();
}

main().catch((error) => {
  process.stderr.write(String(error.stack || error) + "\n");
  process.exit(1);
});
