// The load generator, run as its own process: `node bench/load.mjs '<json spec>'` prints one JSON
// line of results. Every answer is checked: a right password must get `ok`, a wrong one `fail`.
//
// spec: {
//   socket, protocol: 'line' | 'sasl',
//   mode: 'oneshot' (connect, write, read the answer, close: as x2gobroker's own client asks)
//       | 'pipelined' (kept connections, `depth` requests in flight on each),
//   clients, depth, seconds | count (requests per client, whatever the time), wrongShare (0..1),
//   users, service, timeoutMs (for one answer),
//   processes (load generator processes, the clients shared out among them; default 1)
// }
//
// A full listen backlog makes a non-blocking connect() on a Unix socket fail with EAGAIN, where
// x2gobroker's blocking client would simply wait: such a connect is retried after 1, 2, then 4 ms,
// counted in `connectRetries`, and the request's latency runs from its first attempt.
import net from 'node:net';

const spec = JSON.parse(process.argv[2]);
const users = spec.users ?? 1000;
const service = spec.service ?? 'x2gobroker';
const timeoutMs = spec.timeoutMs ?? 10_000;
const depth = spec.depth ?? 16;
let sequence = 0;

/** The next request: a user of the passdb, its right password or (for wrongShare of them) a wrong one. */
function nextRequest() {
	const number = sequence++;
	const index = number % users;
	// A low-discrepancy sequence: the wrong ones are spread evenly, the same in every run.
	const wrong = spec.wrongShare > 0 && ((number + 1) * 0.618_033_988_75) % 1 < spec.wrongShare;
	return {user: `u${index}`, password: wrong ? `wrong-${index}` : `pw-${index}-secret`, expect: wrong ? 'fail' : 'ok'};
}

function field(text) {
	const bytes = Buffer.from(text);
	const length = Buffer.alloc(2);
	length.writeUInt16BE(bytes.length);
	return [length, bytes];
}

function encode({user, password}) {
	if (spec.protocol === 'sasl') {
		// saslauthd: user, password, service, realm, each a big-endian u16 length and the bytes.
		return Buffer.concat([user, password, service, ''].flatMap(field));
	}

	return Buffer.from(`${user}\r${password}\r${service}\n`, 'latin1');
}

/** Answers complete in `buffer` (as `ok`, `fail` or what the peer said), and the bytes left over. */
function decode(buffer) {
	const answers = [];
	let offset = 0;
	if (spec.protocol === 'sasl') {
		while (buffer.length - offset >= 2) {
			const length = buffer.readUInt16BE(offset);
			if (buffer.length - offset < 2 + length) {
				break;
			}

			const text = buffer.toString('latin1', offset + 2, offset + 2 + length);
			answers.push(text.startsWith('OK') ? 'ok' : (text.startsWith('NO') ? 'fail' : text));
			offset += 2 + length;
		}
	} else {
		for (let end = buffer.indexOf(10, offset); end !== -1; end = buffer.indexOf(10, offset)) {
			answers.push(buffer.toString('latin1', offset, end));
			offset = end + 1;
		}
	}

	return {answers, rest: offset === buffer.length ? undefined : buffer.subarray(offset)};
}

// --- Results ----------------------------------------------------------------------------------
let latencies = new Float64Array(1 << 16);
let done = 0;
let mismatches = 0;
let errors = 0;
let connectRetries = 0;
const errorKinds = {};
const mismatchSamples = [];

function record(expected, answer, started) {
	if (done === latencies.length) {
		const bigger = new Float64Array(latencies.length * 2);
		bigger.set(latencies);
		latencies = bigger;
	}

	latencies[done++] = performance.now() - started;
	if (answer !== expected) {
		mismatches++;
		if (mismatchSamples.length < 5) {
			mismatchSamples.push({expected, got: answer.slice(0, 40)});
		}
	}
}

function error(kind, count = 1) {
	errors += count;
	errorKinds[kind] = (errorKinds[kind] ?? 0) + count;
}

const startedAt = performance.now();
const deadline = startedAt + (spec.seconds ?? 0) * 1000;
const more = sent => spec.count === undefined ? performance.now() < deadline : sent < spec.count;

/** A connected socket, retrying while the listen backlog is full; undefined if it never connects. */
async function connect(giveUpAt) {
	for (let attempt = 0; ; ) {
		// eslint-disable-next-line no-await-in-loop
		const outcome = await new Promise(resolve => {
			const socket = net.connect(spec.socket);
			socket.once('connect', () => {
				socket.removeAllListeners('error');
				resolve(socket);
			});
			socket.once('error', error_ => resolve(error_));
		});
		if (!(outcome instanceof Error)) {
			return outcome;
		}

		if (outcome.code === 'EAGAIN' && performance.now() < giveUpAt) {
			// 1, 2, 4, 4 … ms: a blocking client would sleep in connect(); retrying every
			// millisecond from 64 clients would take a core from the program measured.
			connectRetries++;
			const delayMs = Math.min(4, 2 ** attempt++);
			// eslint-disable-next-line no-await-in-loop
			await new Promise(resolve => setTimeout(resolve, delayMs));
			continue;
		}

		error(outcome.code === 'EAGAIN' ? 'connect EAGAIN until timeout' : `connect ${outcome.code ?? outcome.message}`);
		return undefined;
	}
}

/** One request per connection, as x2gobroker's own client asks. */
async function oneshotClient() {
	for (let sent = 0; more(sent); sent++) {
		const request = nextRequest();
		const started = performance.now();
		// eslint-disable-next-line no-await-in-loop
		const socket = await connect(started + timeoutMs);
		if (!socket) {
			continue;
		}

		// eslint-disable-next-line no-await-in-loop
		await new Promise(resolve => {
			let buffer;
			let answered = false;
			const finish = () => {
				clearTimeout(timer);
				socket.destroy();
				resolve();
			};

			const timer = setTimeout(() => {
				error('no answer in time');
				answered = true;
				finish();
			}, Math.max(1, started + timeoutMs - performance.now()));
			socket.on('data', chunk => {
				buffer = buffer ? Buffer.concat([buffer, chunk]) : chunk;
				const {answers} = decode(buffer);
				if (answers.length > 0 && !answered) {
					answered = true;
					record(request.expect, answers[0], started);
					finish();
				}
			});
			socket.on('error', error_ => {
				if (!answered) {
					answered = true;
					error(`socket ${error_.code ?? error_.message}`);
					finish();
				}
			});
			socket.on('close', () => {
				if (!answered) {
					answered = true;
					error('closed without an answer');
					finish();
				}
			});
			socket.write(encode(request));
		});
	}
}

/** Requests kept `depth` deep in flight on one connection; a connection the peer closes is replaced. */
async function pipelinedClient() {
	let sent = 0;
	while (more(sent)) {
		// eslint-disable-next-line no-await-in-loop
		const socket = await connect(performance.now() + timeoutMs);
		if (!socket) {
			// eslint-disable-next-line no-await-in-loop
			await new Promise(resolve => setTimeout(resolve, 10));
			continue;
		}

		// eslint-disable-next-line no-await-in-loop
		await new Promise(resolve => {
			const inFlight = [];
			let head = 0;
			let buffer;
			let finished = false;
			let timer;
			const finish = () => {
				if (!finished) {
					finished = true;
					clearTimeout(timer);
					socket.destroy();
					resolve();
				}
			};

			const arm = () => {
				clearTimeout(timer);
				if (head < inFlight.length) {
					timer = setTimeout(() => {
						error('no answer in time', inFlight.length - head);
						finish();
					}, timeoutMs);
				}
			};

			const send = () => {
				const batch = [];
				while (inFlight.length - head < depth && more(sent)) {
					const request = nextRequest();
					sent++;
					inFlight.push({expect: request.expect, started: performance.now()});
					batch.push(encode(request));
				}

				if (batch.length > 0) {
					socket.write(batch.length === 1 ? batch[0] : Buffer.concat(batch));
				}

				if (head === inFlight.length) {
					finish();
				}
			};

			socket.on('data', chunk => {
				buffer = buffer ? Buffer.concat([buffer, chunk]) : chunk;
				const {answers, rest} = decode(buffer);
				buffer = rest;
				for (const answer of answers) {
					const {expect, started} = inFlight[head++];
					record(expect, answer, started);
				}

				if (head > 4096) {
					inFlight.splice(0, head);
					head = 0;
				}

				if (answers.length > 0) {
					arm();
					send();
				}
			});
			const lost = kind => {
				if (!finished) {
					if (inFlight.length > head) {
						error(kind, inFlight.length - head);
					}

					finish();
				}
			};

			socket.on('error', error_ => lost(`socket ${error_.code ?? error_.message}`));
			socket.on('close', () => lost('closed with answers owed'));
			send();
			arm();
		});
	}
}

if (spec.processes > 1) {
	await parent();
} else {
	const startUsage = process.cpuUsage();
	const hardStop = setTimeout(() => {
		// Never outlive the run by much, whatever the peer does.
		error('load generator stopped at its hard limit');
		report(startUsage);
		process.exit(0);
	}, ((spec.seconds ?? 0) * 1000) + timeoutMs + 2000);
	await Promise.all(Array.from({length: spec.clients}, async () => (spec.mode === 'pipelined' ? pipelinedClient() : oneshotClient()).catch(error_ => {
		error(`client ${error_.message}`);
	})));
	clearTimeout(hardStop);
	report(startUsage);
}

function summary(sorted, count, seconds) {
	const quantile = q => count === 0 ? null : Math.round(sorted[Math.min(count - 1, Math.floor(q * count))] * 1000) / 1000;
	return {
		rate: Math.round(count / seconds),
		p50Ms: quantile(0.5),
		p99Ms: quantile(0.99),
		maxMs: count === 0 ? null : Math.round(sorted[count - 1] * 1000) / 1000,
	};
}

function report(startUsage) {
	const seconds = (performance.now() - startedAt) / 1000;
	const cpu = process.cpuUsage(startUsage);
	const sorted = latencies.subarray(0, done).sort();
	process.stdout.write(`${JSON.stringify({
		done,
		seconds: Math.round(seconds * 1000) / 1000,
		...summary(sorted, done, seconds),
		mismatches,
		mismatchSamples,
		errors,
		errorKinds,
		connectRetries,
		loadCpuCores: Math.round((cpu.user + cpu.system) / 1e4 / seconds) / 100,
		...spec.emitLatencies ? {latencies: Array.from(sorted, value => Math.round(value * 1000) / 1000)} : {},
	})}\n`);
}

/**
`processes` load generators, the clients shared out: one Node.js process opening and closing
connections uses a core at about 25 000 a second. (Not used by run.mjs on 2 cores: see there.)
*/
async function parent() {
	const {spawn} = await import('node:child_process');
	const {fileURLToPath} = await import('node:url');
	const shares = Array.from({length: spec.processes}, (_, index) => Math.floor(spec.clients / spec.processes) + (index < spec.clients % spec.processes ? 1 : 0)).filter(share => share > 0);
	const outcomes = await Promise.all(shares.map(async share => {
		const child = spawn(process.execPath, [fileURLToPath(import.meta.url), JSON.stringify({...spec, processes: 1, clients: share, emitLatencies: true})], {stdio: ['ignore', 'pipe', 'inherit']});
		let output = '';
		child.stdout.on('data', chunk => {
			output += chunk;
		});
		await new Promise(resolve => child.on('exit', resolve));
		return JSON.parse(output);
	}));
	const seconds = Math.max(...outcomes.map(outcome => outcome.seconds));
	const all = Float64Array.from(outcomes.flatMap(outcome => outcome.latencies)).sort();
	const sum = key => outcomes.reduce((total, outcome) => total + outcome[key], 0);
	const errorKindsMerged = {};
	for (const outcome of outcomes) {
		for (const [kind, count] of Object.entries(outcome.errorKinds)) {
			errorKindsMerged[kind] = (errorKindsMerged[kind] ?? 0) + count;
		}
	}

	process.stdout.write(`${JSON.stringify({
		done: sum('done'),
		seconds,
		...summary(all, all.length, seconds),
		mismatches: sum('mismatches'),
		mismatchSamples: outcomes.flatMap(outcome => outcome.mismatchSamples).slice(0, 5),
		errors: sum('errors'),
		errorKinds: errorKindsMerged,
		connectRetries: sum('connectRetries'),
		loadCpuCores: Math.round(outcomes.reduce((total, outcome) => total + (outcome.loadCpuCores * outcome.seconds), 0) / seconds * 100) / 100,
		processes: outcomes.length,
	})}\n`);
}
