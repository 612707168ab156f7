// Drives a running ao-appliance node with the unmodified aoconnect client (legacy mode).
// Usage: NODE_URL=http://127.0.0.1:PORT NODE_ADDRESS=... MODULE_ID=<an uploaded Module item> \
//        GRAPHQL_URL=$NODE_URL/graphql node aoconnect_flow.mjs
// (aoconnect has no module upload; the test uploads the Module item itself.)
// Prints one JSON object with everything the pytest side asserts on.
import { generateKeyPairSync } from 'node:crypto'
import { connect, createDataItemSigner } from '@permaweb/aoconnect'

const NODE_URL = process.env.NODE_URL
const NODE_ADDRESS = process.env.NODE_ADDRESS
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 4096, publicExponent: 65537 })
const wallet = { kty: 'RSA', ...privateKey.export({ format: 'jwk' }) }
const signer = createDataItemSigner(wallet)
const ao = connect({ MODE: 'legacy', MU_URL: NODE_URL, CU_URL: NODE_URL, GATEWAY_URL: NODE_URL, GRAPHQL_URL: `${NODE_URL}/graphql`, noLog: true })

async function send (process, tags, data) {
  const id = await ao.message({ process, signer, tags, data })
  const res = await ao.result({ process, message: id })
  return { id, res }
}

const out = {}
const moduleId = process.env.MODULE_ID
out.module = moduleId
// aos trusts pushed messages only from an Authority: the node signs what it pushes.
const spawnTags = (name) => [{ name: 'Name', value: name }, { name: 'Authority', value: NODE_ADDRESS }]
const a = await ao.spawn({ module: moduleId, scheduler: NODE_ADDRESS, signer, tags: spawnTags('alice') })
const b = await ao.spawn({ module: moduleId, scheduler: NODE_ADDRESS, signer, tags: spawnTags('bob') })
out.processes = [a, b]
out.evalAdd = await send(a, [{ name: 'Action', value: 'Eval' }], 'return 40 + 2')
// An error result: clients read res.Output.data and res.Error (AO's CU gives Output "", not null).
out.evalError = await send(a, [{ name: 'Action', value: 'Eval' }], "error('boom')")
out.evalErrorData = out.evalError.res.Output?.data ?? out.evalError.res.Output
out.handler = await send(b, [{ name: 'Action', value: 'Eval' }],
  "Handlers.add('ping', 'Ping', function (m) m.reply({ Data = 'Pong' }) end)")
out.sendPing = await send(a, [{ name: 'Action', value: 'Eval' }], `Send({ Target = '${b}', Action = 'Ping' })`)
// The Pong travels b -> a through the node's messenger; poll a's inbox until it lands.
for (let i = 0; i < 60; i++) {
  const r = await send(a, [{ name: 'Action', value: 'Eval' }], 'return #Inbox > 0 and Inbox[#Inbox].Data or "none"')
  out.inbox = r
  if (JSON.stringify(r.res.Output).includes('Pong')) break
  await new Promise(resolve => setTimeout(resolve, 250))
}
out.results = await ao.results({ process: a, sort: 'DESC', limit: 3 })
// Dry-runs come from an anonymous sender, and aos only evaluates Eval from the owner: ask a handler.
await send(a, [{ name: 'Action', value: 'Eval' }],
  "Handlers.add('answer', 'Answer', function (m) m.reply({ Data = tostring(6 * 7) }) end)")
out.dryrun = await ao.dryrun({ process: a, tags: [{ name: 'Action', value: 'Answer' }] })
console.log(JSON.stringify(out))
