// ANS-104 interop with @dha-team/arbundles (the library aoconnect signs with).
//   node ans104_interop.mjs make OUT.json    items signed with RSA-PSS-4096 (type 1), ed25519
//                                            (type 2), Ethereum secp256k1 (type 3), and a bundle
//   node ans104_interop.mjs verify IN.json   IN: {"items": [base64...], "bundle": base64|null};
//                                            prints {"items": [bool...], "bundle": bool|null}
import { readFileSync, writeFileSync } from "node:fs";
import { generateKeyPairSync, randomBytes, sign as nodeSign } from "node:crypto";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const ab = require("@dha-team/arbundles");

// arbundles' ed25519 signer is abstract (its chains wrap it per wallet format): sign with Node's own.
class Ed25519Signer extends ab.Curve25519 {
  constructor() {
    super("", "");
    const { publicKey, privateKey } = generateKeyPairSync("ed25519");
    this.privateKey = privateKey;
    this.pub = Buffer.from(publicKey.export({ format: "jwk" }).x, "base64url");
  }
  get publicKey() { return this.pub; }
  sign(message) { return nodeSign(null, Buffer.from(message), this.privateKey); }
}

async function make(out) {
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 4096, publicExponent: 65537 });
  const signers = [
    ["arweave", new ab.ArweaveSigner(privateKey.export({ format: "jwk" }))],
    ["ed25519", new Ed25519Signer()],
    ["ethereum", new ab.EthereumSigner(randomBytes(32).toString("hex"))],
  ];
  const target = randomBytes(32).toString("base64url");
  const anchor = randomBytes(32).toString("base64url").slice(0, 32);
  const tags = [{ name: "Data-Protocol", value: "ao" }, { name: "Action", value: "Ünïcödé ✓" },
    { name: "Empty", value: "" }];
  const items = [];
  for (const [kind, signer] of signers) {
    for (const opts of [{}, { target, anchor, tags }]) {
      const item = ab.createData(kind === "ethereum" ? "" : `data for ${kind} ☃`, signer, opts);
      await item.sign(signer);
      items.push({ kind, id: item.id, raw: item.getRaw().toString("base64") });
    }
  }
  const bundled = await ab.bundleAndSignData(
    [ab.createData("one", signers[1][1]), ab.createData("two", signers[1][1], { tags })],
    signers[1][1]);
  writeFileSync(out, JSON.stringify({
    items, bundle: bundled.getRaw().toString("base64"), bundle_ids: bundled.getIds(),
  }));
}

async function verify(input) {
  const spec = JSON.parse(readFileSync(input, "utf8"));
  const items = [];
  for (const raw of spec.items) items.push(await ab.DataItem.verify(Buffer.from(raw, "base64")));
  let bundle = null;
  if (spec.bundle) bundle = await ab.unbundleData(Buffer.from(spec.bundle, "base64")).verify();
  process.stdout.write(JSON.stringify({ items, bundle }) + "\n");
}

const [mode, file] = process.argv.slice(2);
await (mode === "make" ? make(file) : verify(file));
