// The floor of the runtime, for the report: a Node.js server on a Unix socket that answers `ok` to
// every line at once (no PAM, no log, no limits), run with the daemon's own Node.js flags. What it
// does against the same load generator, and how much memory it holds, is what any Node.js daemon of
// this shape starts from. `node bench/node-floor.mjs SOCKET` prints `ready` once it listens.
import {rmSync} from 'node:fs';
import net from 'node:net';

const socketPath = process.argv[2];
rmSync(socketPath, {force: true});
const ok = Buffer.from('ok\n');
net.createServer({allowHalfOpen: true}, socket => {
	socket.on('data', chunk => {
		let lines = 0;
		for (let end = chunk.indexOf(10); end !== -1; end = chunk.indexOf(10, end + 1)) {
			lines++;
		}

		// The load generator sends whole lines; `ok` for each line ended in this chunk.
		socket.write(lines === 1 ? ok : Buffer.alloc(3 * lines, ok));
	});
	socket.on('end', () => socket.end());
	socket.on('error', () => {});
}).listen(socketPath, () => {
	process.stdout.write('ready\n');
});
