// Verify a key-based Sigstore bundle with @sigstore/verify (an independent implementation).
// usage: node sigstore_js_verify.js BUNDLE PUBLIC_KEY_PEM
// prints {"ok":true,"payloadType":...,"payload":<base64>} or {"ok":false,"error":...}; exit 0/1
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');
const { bundleFromJSON } = require('@sigstore/bundle');
const { TrustedRoot } = require('@sigstore/protobuf-specs');

const [bundlePath, pubPath] = process.argv.slice(2);
try {
  const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
  const key = crypto.createPublicKey(fs.readFileSync(pubPath));
  const der = key.export({ type: 'spki', format: 'der' });
  const keyDetails = key.asymmetricKeyType === 'ed25519' ? 'PKIX_ED25519' : 'PKIX_ECDSA_P256_SHA_256';
  const hint = bundle.verificationMaterial.content.publicKey.hint;
  const root = TrustedRoot.fromJSON({
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [], certificateAuthorities: [], ctlogs: [], timestampAuthorities: [],
  });
  const keys = { [hint]: { rawBytes: der, keyDetails, validFor: { start: new Date(0) } } };
  const verifier = new Verifier(toTrustMaterial(root, keys), {
    tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0,
  });
  verifier.verify(toSignedEntity(bundle));
  const env = bundle.content.dsseEnvelope;
  process.stdout.write(JSON.stringify({
    ok: true, payloadType: env.payloadType, payload: Buffer.from(env.payload).toString('base64'),
  }) + '\n');
} catch (err) {
  process.stdout.write(JSON.stringify({ ok: false, error: String(err && err.message || err) }) + '\n');
  process.exit(1);
}
