// A real OpenID Connect provider (oidc-provider, the certified implementation) for
// moodbridge-auth's tests. Listens on 127.0.0.1 only and prints one JSON line
// {"issuer": "..."} when ready. Settings come from the environment:
//   OIDC_PORT                 port (default 0 = any free port)
//   OIDC_KID                  key id of the signing key (default "k1"; a new key is generated
//                             per start, so restarting with another kid rotates the keys)
//   OIDC_ACCESS_TOKEN_TTL     seconds (default 300)
//   OIDC_JWT_BEARER_KEY_FILE  PEM public key (SPKI) that verifies JWT-bearer assertions
//
// Clients:
//   svc         / svc-secret   client_credentials, JWT access tokens for urn:moodbridge:api
//   web         / web-secret   authorization_code + PKCE (S256) + refresh_token (rotated),
//                              any loopback redirect port (native app, RFC 8252)
//   sf-app      (no secret)    urn:ietf:params:oauth:grant-type:jwt-bearer (RFC 7523), the
//                              Salesforce server-to-server flow; assertions verified with jose
// Login and consent are completed automatically for account "alice".
import http from 'node:http';
import { readFileSync } from 'node:fs';
import Provider, { errors } from 'oidc-provider';
import { exportJWK, generateKeyPair, importSPKI, jwtVerify } from 'jose';

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const RESOURCE = 'urn:moodbridge:api';
const accessTokenTTL = Number(process.env.OIDC_ACCESS_TOKEN_TTL || 300);

const server = http.createServer();
await new Promise((resolve) => server.listen(Number(process.env.OIDC_PORT || 0), '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const signing = { ...(await exportJWK(privateKey)), kid: process.env.OIDC_KID || 'k1', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'svc',
      client_secret: 'svc-secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      scope: 'api:read api:write',
    },
    {
      client_id: 'web',
      client_secret: process.env.OIDC_WEB_SECRET || 'web-secret',
      application_type: 'native',
      grant_types: ['authorization_code', 'refresh_token'],
      redirect_uris: ['http://127.0.0.1/callback'],
      response_types: ['code'],
      scope: 'openid offline_access api:read',
    },
    {
      client_id: 'sf-app',
      token_endpoint_auth_method: 'none',
      grant_types: [JWT_BEARER],
      redirect_uris: [],
      response_types: [],
    },
  ],
  jwks: { keys: [signing] },
  scopes: ['openid', 'offline_access', 'api:read', 'api:write'],
  features: {
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api:read api:write',
        audience: RESOURCE,
        accessTokenFormat: 'jwt',
        accessTokenTTL,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  pkce: { required: () => true },
  rotateRefreshToken: true,
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  ttl: { AccessToken: accessTokenTTL, ClientCredentials: accessTokenTTL, AuthorizationCode: 60, RefreshToken: 3600, Grant: 3600, Interaction: 600, Session: 3600 },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  findAccount: (_ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
  cookies: { keys: ['moodbridge-test-cookie-key'] },
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
  },
});

// RFC 7523 JWT bearer grant: iss = client_id, sub = the user, aud = the issuer, RS256.
const bearerKey = process.env.OIDC_JWT_BEARER_KEY_FILE
  ? await importSPKI(readFileSync(process.env.OIDC_JWT_BEARER_KEY_FILE, 'utf8'), 'RS256')
  : undefined;
provider.registerGrantType(JWT_BEARER, async (ctx) => {
  const { client } = ctx.oidc;
  if (!bearerKey) throw new errors.InvalidGrant('no JWT bearer key configured');
  let payload;
  try {
    ({ payload } = await jwtVerify(ctx.oidc.params.assertion || '', bearerKey, {
      issuer: client.clientId,
      audience: issuer,
      algorithms: ['RS256'],
      maxTokenAge: '5m',
      requiredClaims: ['sub', 'exp'],
    }));
  } catch (e) {
    throw new errors.InvalidGrant(`assertion rejected: ${e.code || e.message}`);
  }
  const token = new ctx.oidc.provider.ClientCredentials({ client, scope: 'api:read' });
  token.extra = { sub: payload.sub };
  ctx.body = {
    access_token: await token.save(),
    token_type: 'Bearer',
    expires_in: token.expiration,
    scope: 'api:read',
    instance_url: issuer,
    id: `${issuer}/id/${payload.sub}`,
  };
}, ['assertion']);

// Headless login and consent for account "alice".
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name === 'login') {
    await provider.interactionFinished(req, res, { login: { accountId: 'alice' } }, { mergeWithLastSubmission: false });
    return;
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
  const missing = details.prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((e) => {
      res.statusCode = 500;
      res.end(String(e));
    });
    return;
  }
  callback(req, res);
});

provider.on('server_error', (_ctx, e) => console.error('server_error', e));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
console.log(JSON.stringify({ issuer }));
