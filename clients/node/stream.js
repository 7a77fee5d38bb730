#!/usr/bin/env node
// Streams one woolly_grpc agent run to stdout with @grpc/grpc-js, loading the API from protos/.
//
//   node clients/node/stream.js HOST:PORT REPOSITORY AGENT_TYPE "QUERY"
//   e.g. node clients/node/stream.js localhost:50051 inventory summarizer "What does it do?"
//
// The answer's text goes to stdout as it arrives; tool calls and the run id go to stderr.
// WOOLLY_API_KEY, when set, is sent as `authorization: Bearer <key>`. Exits 1 with the gRPC
// status on failure, 2 on bad usage.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTOS = path.resolve(__dirname, '..', '..', 'protos');

function loadService() {
  const definition = protoLoader.loadSync('woolly/v1/agent_service.proto', {
    includeDirs: [PROTOS],
    keepCase: true, // field names as in the .proto: run_id, text_delta, ...
    enums: String,
    longs: Number, // sequence numbers are int64
    defaults: false,
    oneofs: true, // message.event names the member that is set
  });
  return grpc.loadPackageDefinition(definition).woolly.v1.AgentService;
}

function main(argv) {
  if (argv.length !== 4) {
    process.stderr.write('usage: stream.js HOST:PORT REPOSITORY AGENT_TYPE QUERY\n');
    return process.exit(2);
  }
  const [target, repository, agentType, query] = argv;
  const AgentService = loadService();
  const client = new AgentService(target, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  if (process.env.WOOLLY_API_KEY) {
    metadata.set('authorization', `Bearer ${process.env.WOOLLY_API_KEY}`);
  }
  const request = {
    repository_name: repository,
    agent_type: `AGENT_TYPE_${agentType.toUpperCase()}`,
    user_query: query,
  };
  const deadline = new Date(Date.now() + 60_000);
  const call = client.StreamExecute(request, metadata, { deadline });
  call.on('data', (message) => {
    switch (message.event) {
      case 'text_delta':
        process.stdout.write(message.text_delta.text);
        break;
      case 'tool_call':
        process.stderr.write(`[tool] ${message.tool_call.name}(${message.tool_call.args_json})\n`);
        break;
      case 'completed':
        process.stderr.write(`\n[run ${message.run_id} done, sequence ${message.sequence}]\n`);
        break;
      default:
        break;
    }
  });
  call.on('error', (error) => {
    const code = grpc.status[error.code] ?? error.code;
    process.stderr.write(`stream.js: ${code}: ${error.details}\n`);
    process.exitCode = 1;
  });
  call.on('end', () => client.close());
}

main(process.argv.slice(2));
