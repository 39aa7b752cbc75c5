// gRPC probes for test_drain_overload.py, with @grpc/grpc-js:
//   node grpc_probe.mjs NODE_DIR PROTO_DIR health ADDR
//     prints {"status": "SERVING" | "NOT_SERVING" | ..., "error": code name or null}
//   node grpc_probe.mjs NODE_DIR PROTO_DIR deadline ADDR MODEL TIMEOUT_MS
//     one streaming Inference.Generate with a deadline of TIMEOUT_MS; prints
//     {"code": the final status code name, "messages": responses received}
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [nodeDir, protoDir, mode, addr, ...rest] = process.argv.slice(2);
const require = createRequire(path.join(nodeDir, 'package.json'));
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const codeName = (code) => Object.keys(grpc.status).find((k) => grpc.status[k] === code);

if (mode === 'health') {
  // The standard grpc.health.v1 contract, written out here (no .proto of it is installed).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'health-'));
  const file = path.join(dir, 'health.proto');
  fs.writeFileSync(file, `syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
`);
  const def = loader.loadSync(file, { keepCase: true, enums: String, defaults: true });
  const { Health } = grpc.loadPackageDefinition(def).grpc.health.v1;
  const stub = new Health(addr, grpc.credentials.createInsecure());
  stub.Check({ service: '' }, { deadline: Date.now() + 5000 }, (err, res) => {
    console.log(JSON.stringify({ status: err ? null : res.status, error: err ? codeName(err.code) : null }));
    stub.close();
  });
} else if (mode === 'deadline') {
  const [model, timeoutMs] = rest;
  const def = loader.loadSync('moeserve/v1/inference.proto', {
    includeDirs: [protoDir], keepCase: true, longs: Number, defaults: true,
  });
  const { Inference } = grpc.loadPackageDefinition(def).moeserve.v1;
  const stub = new Inference(addr, grpc.credentials.createInsecure());
  const call = stub.Generate(
    { model, prompt: 'Tell me a very long story.', max_tokens: 4000, ignore_eos: true },
    { deadline: Date.now() + Number(timeoutMs) });
  let messages = 0;
  call.on('data', () => { messages += 1; });
  call.on('error', () => {});  // the status event below reports it
  call.on('status', (status) => {
    console.log(JSON.stringify({ code: codeName(status.code), messages }));
    stub.close();
  });
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
