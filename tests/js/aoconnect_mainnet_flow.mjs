// Drives a running ao-appliance node with the unmodified aoconnect client in its default
// (mainnet, AO-Core) mode: no SCHEDULER, so spawn asks GET /~meta@1.0/info/address.
// Usage: NODE_URL=http://127.0.0.1:PORT MODULE_ID=<an uploaded Module item> \
//        node aoconnect_mainnet_flow.mjs
// Prints one JSON object with everything the pytest side asserts on.
import { generateKeyPairSync } from 'node:crypto'
import { connect, createSigner } from '@permaweb/aoconnect'

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 4096, publicExponent: 65537 })
const wallet = { kty: 'RSA', ...privateKey.export({ format: 'jwk' }) }
const ao = connect({ MODE: 'mainnet', URL: process.env.NODE_URL, signer: createSigner(wallet) })

const out = {}
out.process = await ao.spawn({ module: process.env.MODULE_ID, tags: [{ name: 'Name', value: 'mainnet' }] })
const send = async (data) => {
  const slot = await ao.message({ process: out.process, tags: [{ name: 'Action', value: 'Eval' }], data })
  return { slot, res: await ao.result({ process: out.process, slot }) }
}
out.evalAdd = await send('return 40 + 2')
out.handler = await send("Handlers.add('answer', 'Answer', function (m) m.reply({ Data = tostring(6 * 7) }) end)")
out.sendSelf = await send("Send({ Target = ao.id, Data = 'hi' })")
// The message to itself comes back through the node's messenger: poll the Inbox.
for (let i = 0; i < 120; i++) {
  out.inbox = await send('return #Inbox > 0 and Inbox[#Inbox].Data or "none"')
  if (JSON.stringify(out.inbox.res.Output).includes('hi')) break
  await new Promise(resolve => setTimeout(resolve, 500))
}
out.dryrunEval = await ao.dryrun({ process: out.process, tags: [{ name: 'Action', value: 'Eval' }], data: 'return 1 + 1' })
out.dryrunAnswer = await ao.dryrun({ process: out.process, tags: [{ name: 'Action', value: 'Answer' }] })
out.results = await ao.results({ process: out.process })
console.log(JSON.stringify(out))
