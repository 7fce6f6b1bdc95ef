// Holds COUNT idle connections to SOCKET open until stdin closes: `node bench/idle.mjs SOCKET COUNT`.
// Prints {"open":N,"failed":M} once they are all attempted. Connections go out in waves of 200,
// since more at once would overflow the listen backlog, which measures the kernel, not the peer.
import net from 'node:net';

const [socketPath, countText] = process.argv.slice(2);
const count = Number(countText);
const sockets = [];
let failed = 0;
for (let wave = 0; wave < count; wave += 200) {
	// eslint-disable-next-line no-await-in-loop
	await Promise.all(Array.from({length: Math.min(200, count - wave)}, async () => new Promise(resolve => {
		const socket = net.connect(socketPath);
		socket.once('connect', () => {
			sockets.push(socket);
			resolve();
		});
		socket.on('error', () => {
			failed++;
			resolve();
		});
	})));
}

process.stdout.write(`${JSON.stringify({open: sockets.filter(socket => !socket.destroyed).length, failed})}\n`);
process.stdin.resume();
process.stdin.on('end', () => {
	for (const socket of sockets) {
		socket.destroy();
	}

	process.exit(0);
});
