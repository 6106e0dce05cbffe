// Starts node-oidc-provider on 127.0.0.1 for jwksd's token tests.
//
// The authorization server is the real, unmodified library, configured for SMART Backend
// Services: client_credentials with private_key_jwt, the client's keys fetched from
// jwksd's JWKS URL. Around it, test plumbing only: a SMART discovery document (normally
// served by the FHIR server) and a counter of token requests.
//
// Environment: JWKS_URI (required), CLIENT_ID, SCOPES (the server's scopes), CLIENT_SCOPES
// (those granted to the client), TOKEN_TTL (s). Prints one JSON line with the chosen port
// once listening.
import http from 'node:http';
import Provider from 'oidc-provider';

const jwksUri = process.env.JWKS_URI;
if (!jwksUri) {
  console.error('JWKS_URI is required');
  process.exit(2);
}
const clientId = process.env.CLIENT_ID || 'jwksd-test-client';
const scopes = (process.env.SCOPES || 'system/Patient.read system/Observation.read system/Secret.read').split(' ');
const clientScopes = process.env.CLIENT_SCOPES || 'system/Patient.read system/Observation.read';
const ttl = Number(process.env.TOKEN_TTL || 300);

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'private_key_jwt',
    jwks_uri: jwksUri,
    scope: clientScopes,
  }],
  clientAuthMethods: ['private_key_jwt'],
  enabledJWA: {
    clientAuthSigningAlgValues: ['RS256', 'RS384', 'RS512', 'ES256', 'ES384'],
  },
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
  },
  scopes,
  ttl: { ClientCredentials: ttl },
  // The provider refuses to fetch from special-use addresses (SSRF protection). In these
  // tests jwksd's JWKS URL is on loopback, so the documented `fetch` hook drops that
  // dispatcher; everything else about the fetch (timeout, caching by max-age) is unchanged.
  fetch: (url, options) => {
    delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
});
provider.proxy = false;

let tokenRequests = 0;
const fhirBase = '/fhir';
provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path === '/token') {
    tokenRequests += 1;
  }
  if (ctx.path === '/test/token-requests') {
    ctx.body = { count: tokenRequests };
    return;
  }
  if (ctx.path === `${fhirBase}/.well-known/smart-configuration`) {
    ctx.body = {
      issuer,
      token_endpoint: `${issuer}/token`,
      grant_types_supported: ['client_credentials'],
      token_endpoint_auth_methods_supported: ['private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
      scopes_supported: scopes,
      capabilities: ['client-confidential-asymmetric'],
    };
    return;
  }
  await next();
});

// The reason behind each refusal, for the test log (the response says only invalid_client).
for (const event of ['grant.error', 'server_error']) {
  provider.on(event, (ctx, err) => {
    const causes = [];
    for (let cause = err.cause; cause; cause = cause.cause) causes.push(cause.message || String(cause));
    console.error(`${event}: ${err.message}: ${err.error_detail || ''} ${causes.join(' <- ')}`);
  });
}

// Fail at start, with the reason, if the client registration is not acceptable.
try {
  await provider.Client.find(clientId);
} catch (err) {
  console.error(`client metadata refused: ${err.error_description || err.message}`);
  process.exit(2);
}

server.on('request', provider.callback());
console.log(JSON.stringify({ port, issuer, token_endpoint: `${issuer}/token`, fhir_base_url: `${issuer}${fhirBase}` }));
