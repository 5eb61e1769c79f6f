// Counting for bench/peers_bench.py: Artillery's ws engine only counts frames inside a capture step, so
// this hooks the socket's 'message' event (every frame, honestly counted) and writes the running counts
// to a file that the benchmark reads. Change messages are the frames whose JSON starts with
// {"type":"change" (gzip binary frames are inflated first), as the Python receivers decide by "type".
'use strict';
const fs = require('fs');
const zlib = require('zlib');
const { threadId } = require('worker_threads');

const dir = process.env.PEERS_DIR;
const tokens = JSON.parse(fs.readFileSync(process.env.PEERS_TOKENS, 'utf8'));
const file = `${dir}/count-${process.pid}-${threadId}`;
let nextToken = 0;
let changes = 0;
let acks = 0;
let frames = 0;
let written = '';

const timer = setInterval(() => {
  const s = `${changes} ${acks} ${frames}`;
  if (s !== written) {
    fs.writeFileSync(file + '.tmp', s);
    fs.renameSync(file + '.tmp', file);
    written = s;
  }
}, 100);
timer.unref();

function onMessage(data) {
  frames++;
  if (typeof data !== 'string') {
    const b = Buffer.isBuffer(data) ? data : Buffer.from(data);
    data = (b[0] === 0x1f && b[1] === 0x8b ? zlib.gunzipSync(b) : b).toString();
  }
  if (data.startsWith('{"type":"change"')) changes++;
  else if (data.startsWith('{"type":"subscription_ack"')) acks++;
}

// connect.function: the upgrade carries one listener's Bearer token
function connectWithToken(wsArgs, context, done) {
  const token = tokens[nextToken++ % tokens.length];
  wsArgs.options = Object.assign({}, wsArgs.options, { headers: { Authorization: 'Bearer ' + token } });
  done();
}

function hookMessages(context, events, done) {
  context.ws.on('message', onMessage);
  done();
}

module.exports = { connectWithToken, hookMessages };
