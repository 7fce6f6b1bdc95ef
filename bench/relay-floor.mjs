// The floor of the design, for the report: the least a Node.js daemon that hands every check to
// PAM worker processes can do. A Unix-socket server that reads request lines as the daemon does
// (dist/protocol.js: LineReader, parseRequest), relays each to the daemon's own C workers
// (build/pam-authservice-worker, frames written and read by dist/worker-protocol.js) and
// answers `ok` or `fail` by their result, in request order per connection: no log, no limits, no
// throttle, no time-outs, no supervision. Run with the daemon's Node.js flags and environment, and
// as many workers as the daemon starts under load (two a core), it shows what the shape itself
// (one event loop, one hop to a worker and back) allows against the same load generator; the gap
// to pam-authservice is what the daemon's own work costs.
// `node bench/relay-floor.mjs SOCKET WORKER_PATH WORKERS` prints `ready` once it listens.
import {spawn} from 'node:child_process';
import {rmSync} from 'node:fs';
import net from 'node:net';
import {defaultConfig} from '../dist/config.js';
import {LineReader, parseRequest} from '../dist/protocol.js';
import {decodeResponse, encodeRequest, ResponseReader} from '../dist/worker-protocol.js';

const [socketPath, workerPath, workerCount] = process.argv.slice(2);
const answers = {ok: Buffer.from('ok\n'), fail: Buffer.from('fail\n')};
/** The daemon's own line and field limits: the floor reads requests as the daemon does. */
const limits = defaultConfig();

/** The worker's request frame for a request line, by the daemon's own parser and encoder; none for a malformed line. */
function frame(line) {
	const request = parseRequest(line, limits);
	return request.kind === 'request' ? encodeRequest(request) : undefined;
}

const idle = [];
const waiting = [];

function startWorker() {
	const child = spawn(workerPath, [], {stdio: ['pipe', 'pipe', 'inherit']});
	const worker = {child, slot: undefined, reader: new ResponseReader()};
	child.stdout.on('data', chunk => {
		// Read and decoded as the daemon's pool does: that much of a response's cost is the design's.
		for (const payload of worker.reader.push(chunk)) {
			const result = decodeResponse(payload);
			const {slot} = worker;
			worker.slot = undefined;
			settle(slot, result.step === 'none' && result.pamCode === 0 ? answers.ok : answers.fail);
			dispatch(worker);
		}
	});
	child.on('exit', () => {
		process.stderr.write('relay-floor: a worker exited\n');
		process.exit(1);
	});
	return worker;
}

function send(worker, slot) {
	worker.slot = slot;
	worker.child.stdin.write(slot.frame);
	slot.frame = undefined;
}

function dispatch(worker) {
	const next = waiting.shift();
	if (next) {
		send(worker, next);
	} else {
		idle.push(worker);
	}
}

function settle(slot, answer) {
	slot.answer = answer;
	const {connection} = slot;
	while (connection.slots.length > 0 && connection.slots[0].answer) {
		connection.socket.write(connection.slots.shift().answer);
	}

	if (connection.ended && connection.slots.length === 0) {
		connection.socket.end();
	}
}

for (let index = 0; index < Number(workerCount); index++) {
	idle.push(startWorker());
}

// The benchmark stops it with SIGTERM: exit normally (a --cpu-prof profile is written at exit).
process.on('SIGTERM', () => {
	process.exit(0);
});

rmSync(socketPath, {force: true});
net.createServer({allowHalfOpen: true}, socket => {
	const connection = {socket, slots: [], reader: new LineReader(limits.maxLineBytes), ended: false};
	socket.on('data', chunk => {
		connection.reader.push(chunk);
		for (let line = connection.reader.next(); line !== undefined; line = connection.reader.next()) {
			// An over-long line has no request to relay (the load generator never sends one).
			const slot = {connection, answer: undefined, frame: line === 'overlong' ? undefined : frame(line)};
			connection.slots.push(slot);
			if (!slot.frame) {
				settle(slot, answers.fail);
				continue;
			}

			const worker = idle.pop();
			if (worker) {
				send(worker, slot);
			} else {
				waiting.push(slot);
			}
		}
	});
	socket.on('end', () => {
		connection.ended = true;
		if (connection.slots.length === 0) {
			socket.end();
		}
	});
	socket.on('error', () => {});
}).listen(socketPath, () => {
	process.stdout.write('ready\n');
});
