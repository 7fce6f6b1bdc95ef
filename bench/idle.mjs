// Holds COUNT idle connections to SOCKET: `node bench/idle.mjs SOCKET COUNT SECONDS`.
// Opens them in waves of 200 (a connect refused with EAGAIN, the listen backlog full, is retried
// for up to SECONDS in all, as a blocking client would wait), then prints
// {"open":N,"failed":M,"connectRetries":R,"ms":T}. Each line then read on stdin makes it print
// {"stillOpen":N,"closedByPeer":C}; at the end of stdin it closes them all and exits.
import net from 'node:net';
import {createInterface} from 'node:readline';

const [socketPath, countText, secondsText] = process.argv.slice(2);
const count = Number(countText);
const started = performance.now();
const giveUpAt = started + (Number(secondsText) * 1000);
const sockets = [];
let failed = 0;
let connectRetries = 0;
let closedByPeer = 0;
const failures = {};

async function open() {
	for (;;) {
		// eslint-disable-next-line no-await-in-loop
		const outcome = await new Promise(resolve => {
			const socket = net.connect(socketPath);
			socket.once('connect', () => resolve(socket));
			socket.once('error', error => resolve(error));
		});
		if (!(outcome instanceof Error)) {
			outcome.removeAllListeners('error');
			outcome.on('error', () => {});
			outcome.once('close', () => {
				closedByPeer++;
			});
			// Whatever the peer sends (nothing, normally) is read and dropped.
			outcome.resume();
			sockets.push(outcome);
			return;
		}

		if (outcome.code === 'EAGAIN' && performance.now() < giveUpAt) {
			connectRetries++;
			// eslint-disable-next-line no-await-in-loop
			await new Promise(resolve => setTimeout(resolve, 2));
			continue;
		}

		failed++;
		failures[outcome.code ?? outcome.message] = (failures[outcome.code ?? outcome.message] ?? 0) + 1;
		return;
	}
}

for (let wave = 0; wave < count; wave += 200) {
	// eslint-disable-next-line no-await-in-loop
	await Promise.all(Array.from({length: Math.min(200, count - wave)}, open));
}

// A peer that closes what it cannot serve does so at once: give it a moment to show it.
await new Promise(resolve => setTimeout(resolve, 200));
const stillOpen = () => sockets.filter(socket => !socket.destroyed && !socket.readableEnded).length;
process.stdout.write(`${JSON.stringify({open: stillOpen(), attempted: count, failed, failures, connectRetries, closedByPeer, ms: Math.round(performance.now() - started)})}\n`);
createInterface({input: process.stdin})
	.on('line', () => {
		process.stdout.write(`${JSON.stringify({stillOpen: stillOpen(), closedByPeer})}\n`);
	})
	.on('close', () => {
		for (const socket of sockets) {
			socket.destroy();
		}

		process.exit(0);
	});
