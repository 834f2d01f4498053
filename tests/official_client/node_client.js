// Drives the emulator with api.video's official Node.js client
// (@api.video/nodejs-client), as tests/official_client.rs asks: it reports
// what the client saw as one JSON object on stdout, and the Rust test checks
// it against what the emulator stored.
//
// Environment: EMU_URL, EMU_LIMITED_URL (an emulator allowing 2 reads per
// window), API_KEY, WHOLE_FILE, PART_A, PART_B, CHUNKED_FILE (over the chunk
// size), CHUNK_SIZE. The client
// module is found through NODE_PATH.
'use strict';

const ApiVideoClient = require('@api.video/nodejs-client');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

// The status of a call that must fail, or 'no error'.
async function statusOf(call) {
  try {
    await call();
    return 'no error';
  } catch (e) {
    return e.code === undefined ? `not an API error: ${e}` : e.code;
  }
}

function rateHeaders(headers) {
  return {
    limit: headers['x-ratelimit-limit'],
    remaining: headers['x-ratelimit-remaining'],
    retryAfter: headers['x-ratelimit-retry-after'],
  };
}

async function main() {
  const chunkSize = Number(env('CHUNK_SIZE'));
  const client = new ApiVideoClient({
    apiKey: env('API_KEY'),
    baseUri: env('EMU_URL'),
    chunkSize,
  });
  const out = {};

  // Upload tokens, the API key sent through HTTP Basic.
  const created = await client.uploadTokens.createTokenWithResponseHeaders({ ttl: 3600 });
  const token = created.body.token;
  out.created = { token, ttl: created.body.ttl, rate: rateHeaders(created.headers) };
  const listed = await client.uploadTokens.list({ pageSize: 100 });
  out.listed = listed.data.map((t) => t.token);
  const shown = await client.uploadTokens.getToken(token);
  out.shown = { token: shown.token, ttl: shown.ttl };

  // A whole file, and a progressive session (part N/*, then part N/N).
  const whole = await client.videos.uploadWithUploadToken(token, env('WHOLE_FILE'));
  out.whole = { videoId: whole.videoId, title: whole.title };
  const session = client.videos.createUploadWithUploadTokenProgressiveSession(token);
  const first = await session.uploadPart(env('PART_A'));
  const last = await session.uploadLastPart(env('PART_B'));
  out.progressive = { firstVideoId: first.videoId, videoId: last.videoId, title: last.title };
  const chunked = await client.videos.uploadWithUploadToken(token, env('CHUNKED_FILE'));
  out.chunked = { lastVideoId: chunked.videoId };

  await client.uploadTokens.deleteToken(token);
  out.showDeleted = await statusOf(() => client.uploadTokens.getToken(token));
  out.deleteDeleted = await statusOf(() => client.uploadTokens.deleteToken(token));
  out.uploadDeleted = await statusOf(() =>
    client.videos.uploadWithUploadToken(token, env('WHOLE_FILE'))
  );

  const wrongKey = new ApiVideoClient({
    apiKey: 'notTheKey',
    baseUri: env('EMU_URL'),
    chunkSize,
  });
  out.wrongKeyList = await statusOf(() => wrongKey.uploadTokens.list());
  out.wrongKeyCreate = await statusOf(() => wrongKey.uploadTokens.createToken({}));

  // The reads bucket: 2 admitted, then 429.
  const limited = new ApiVideoClient({
    apiKey: env('API_KEY'),
    baseUri: env('EMU_LIMITED_URL'),
    chunkSize,
  });
  out.limited = [];
  for (let i = 0; i < 2; i++) {
    const r = await limited.uploadTokens.listWithResponseHeaders({});
    out.limited.push(rateHeaders(r.headers));
  }
  out.limitedThird = await statusOf(() => limited.uploadTokens.list());

  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((e) => {
  process.stderr.write(`official Node.js client failed: ${e && e.stack ? e.stack : e}\n`);
  if (e && e.problemDetails) {
    process.stderr.write(`problem: ${JSON.stringify(e.problemDetails)} (HTTP ${e.code})\n`);
  }
  process.exit(1);
});
