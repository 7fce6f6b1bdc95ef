// `npm run bench`: pam-authservice against the programs people would use instead, on one PAM stack
// (pam_wrapper + pam_matrix, 1000 users), on this machine's Unix sockets only. Sets itself up,
// runs bounded scenarios, writes bench/results/{DATE,latest}.{md,json} and chart.svg.
// Flags: --quick (shorter runs), --only NAME[,NAME] (peers: pam-authservice, x2gobroker-authservice,
// saslauthd; scenarios: throughput, pipelined, wrong, head-of-line, idle-flood).
import {execFileSync, spawn, spawnSync} from 'node:child_process';
import {existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import {fileURLToPath} from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const cache = path.join(root, 'bench/.cache');
const results = path.join(root, 'bench/results');
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const only = args.includes('--only') ? new Set(args[args.indexOf('--only') + 1].split(',')) : undefined;
const wanted = name => !only || only.has(name);
const seconds = quick ? 1.5 : 3;
const users = 1000;

function log(message) {
	process.stderr.write(`bench: ${message}\n`);
}

// --- Set-up from nothing ------------------------------------------------------------------------
function setup() {
	const packages = ['libpam-wrapper', 'libpam0g-dev', 'sasl2-bin', 'python3', 'python3-pampy', 'python3-setproctitle', 'gcc', 'make'];
	const missing = packages.filter(name => !/ok installed/.test(spawnSync('dpkg-query', ['-W', '-f=${Status}', name], {encoding: 'utf8'}).stdout));
	if (missing.length > 0) {
		log(`installing ${missing.join(' ')}`);
		const sudo = process.getuid() === 0 ? [] : ['sudo'];
		execFileSync(sudo[0] ?? 'apt-get', [...sudo.slice(1), ...(sudo.length > 0 ? ['apt-get'] : []), 'update', '-qq'], {stdio: 'inherit'});
		execFileSync(sudo[0] ?? 'apt-get', [...(sudo.length > 0 ? ['apt-get'] : []), 'install', '-y', '-qq', '--no-install-recommends', ...missing], {stdio: 'inherit', env: {...process.env, DEBIAN_FRONTEND: 'noninteractive'}});
	}

	mkdirSync(cache, {recursive: true});
	const x2goSite = path.join(cache, 'x2go/usr/lib/python3/dist-packages');
	if (!existsSync(path.join(x2goSite, 'x2gobroker/authservice.py'))) {
		log('unpacking x2gobroker-authservice from Debian\'s packages');
		const downloads = path.join(cache, 'debs');
		mkdirSync(downloads, {recursive: true});
		execFileSync('apt-get', ['download', 'x2gobroker-authservice', 'python3-x2gobroker'], {cwd: downloads, stdio: 'ignore'});
		for (const file of readdirSync(downloads).filter(name => name.endsWith('.deb'))) {
			execFileSync('dpkg-deb', ['-x', path.join(downloads, file), path.join(cache, 'x2go')]);
		}
	}

	if (!existsSync(path.join(root, 'dist/cli/daemon.js'))) {
		execFileSync('npm', ['run', 'build'], {cwd: root, stdio: 'inherit'});
	}

	execFileSync('cc', ['-O2', '-Wall', '-o', path.join(cache, 'pam-loop'), path.join(root, 'bench/pam-loop.c'), '-lpam', '-lpthread']);
	return {x2goSite};
}

// --- Processes ----------------------------------------------------------------------------------
function tree(pid) {
	const children = new Map();
	for (const entry of readdirSync('/proc').filter(name => /^\d+$/.test(name))) {
		try {
			const stat = readFileSync(`/proc/${entry}/stat`, 'latin1');
			const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
			children.set(parent, [...children.get(parent) ?? [], Number(entry)]);
		} catch {}
	}

	const all = [pid];
	for (let index = 0; index < all.length; index++) {
		all.push(...children.get(all[index]) ?? []);
	}

	return all;
}

/** Resident memory of a process and all below it, in MiB. */
function rssMiB(pids) {
	let kib = 0;
	for (const pid of pids.flatMap(tree)) {
		try {
			kib += Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
		} catch {}
	}

	return Math.round(kib / 102.4) / 10;
}

/** CPU seconds of a process tree, reaped children included. */
function cpuSeconds(pids) {
	const ticks = os.constants ? 100 : 100;
	let total = 0;
	for (const pid of [...new Set(pids.flatMap(tree))]) {
		try {
			const fields = readFileSync(`/proc/${pid}/stat`, 'latin1').slice(readFileSync(`/proc/${pid}/stat`, 'latin1').lastIndexOf(')') + 2).split(' ');
			// utime, stime, cutime, cstime: fields 14 to 17 of stat, 12 to 15 after the command.
			total += Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
		} catch {}
	}

	return total / ticks;
}

async function answers(socketPath) {
	return new Promise(resolve => {
		const socket = net.connect(socketPath, () => {
			socket.destroy();
			resolve(true);
		});
		socket.on('error', () => resolve(false));
	});
}

async function waitForSocket(socketPath, timeoutMs = 15_000) {
	const started = performance.now();
	while (!(await answers(socketPath))) {
		if (performance.now() - started > timeoutMs) {
			throw new Error(`nothing answers on ${socketPath}`);
		}

		await sleep(5);
	}

	return performance.now() - started;
}

function alive(pids) {
	return pids.every(pid => {
		try {
			process.kill(pid, 0);
			return true;
		} catch {
			return false;
		}
	});
}

// --- The peers ----------------------------------------------------------------------------------
function peers(sandbox, {x2goSite}, directory) {
	const env = {...process.env, ...sandbox.environment};
	return {
		'pam-authservice': {
			protocol: 'line',
			note: 'default limits, but the throttle and per-uid limits raised: the load generator is one uid sending thousands of failures a second',
			async start() {
				const socket = path.join(directory, 'pam-authservice.socket');
				const child = spawn(process.execPath, [path.join(root, 'dist/cli/daemon.js'), '--config', '/dev/null', '-s', socket, '--owner', String(process.getuid()), '--group', String(process.getgid()),
					'--services', 'x2gobroker', 'faildelay', '--max-connections', '20000', '--max-connections-per-uid', '20000', '--max-waiting-per-key', '10000',
					'--failure-budget-burst', '1000000000', '--failure-budget-per-second', '1000000000', '--free-failures', '1000000000'],
				{env, stdio: ['ignore', 'ignore', 'ignore']});
				return {socket, pids: [child.pid], startMs: await waitForSocket(socket), stop: () => child.kill('SIGTERM')};
			},
		},
		'x2gobroker-authservice': {
			protocol: 'line',
			note: 'Debian\'s x2gobroker 0.0.4.3 AuthService (asyncore, Python 3.11), python-pam pointed at pam_wrapper',
			async start() {
				const socket = path.join(directory, 'x2go.socket');
				const child = spawn('/usr/bin/python3', [path.join(root, 'bench/x2go-runner.py'), x2goSite, socket], {env, stdio: ['ignore', 'ignore', 'ignore']});
				return {socket, pids: [child.pid], startMs: await waitForSocket(socket), stop: () => child.kill('SIGKILL')};
			},
		},
		saslauthd: {
			protocol: 'sasl',
			note: 'Cyrus saslauthd -a pam -n 5',
			async start() {
				const mux = path.join(directory, 'saslauthd');
				mkdirSync(mux, {recursive: true});
				const started = performance.now();
				execFileSync('/usr/sbin/saslauthd', ['-a', 'pam', '-n', '5', '-m', mux], {env});
				const socket = path.join(mux, 'mux');
				await waitForSocket(socket);
				const pid = Number(readFileSync(path.join(mux, 'saslauthd.pid'), 'utf8'));
				return {socket, pids: [pid], startMs: performance.now() - started, stop: () => process.kill(pid, 'SIGTERM')};
			},
		},
	};
}

// --- Load ---------------------------------------------------------------------------------------
async function load(spec) {
	const child = spawn(process.execPath, [path.join(root, 'bench/load.mjs'), JSON.stringify({users, timeoutMs: 10_000, ...spec})], {stdio: ['ignore', 'pipe', 'inherit']});
	let output = '';
	child.stdout.on('data', chunk => {
		output += chunk;
	});
	await new Promise(resolve => child.on('exit', resolve));
	return JSON.parse(output);
}

async function trivialServer(socketPath) {
	// Answers `ok` to every line at once: what the load generator can do when the peer costs nothing.
	const script = `const net=require('net');net.createServer({},s=>{let n=0;s.on('data',d=>{let k=0;for(const b of d)if(b===10)k++;if(k)s.write(Buffer.alloc(3*k,'ok\\n'));});s.on('error',()=>{})}).listen(process.argv[1],()=>console.log('up'))`;
	const child = spawn(process.execPath, ['-e', script, socketPath], {stdio: ['ignore', 'pipe', 'ignore']});
	await new Promise(resolve => child.stdout.once('data', resolve));
	return child;
}

// --- Scenarios ----------------------------------------------------------------------------------
async function measurePeer(name, peer) {
	log(`${name}: starting`);
	const running = await peer.start();
	const result = {name, note: peer.note, startMs: Math.round(running.startMs), throughput: {}, pipelined: {}};
	await sleep(300);
	result.rssIdleMiB = rssMiB(running.pids);
	const base = {socket: running.socket, protocol: peer.protocol, seconds};

	if (wanted('throughput')) {
		for (const clients of [1, 8, 64]) {
			const cpuBefore = cpuSeconds(running.pids);
			const outcome = await load({...base, mode: 'oneshot', clients});
			outcome.cpuMsPerRequest = outcome.done > 0 ? Math.round((cpuSeconds(running.pids) - cpuBefore) / outcome.done * 1e6) / 1e3 : null;
			result.throughput[clients] = outcome;
			log(`${name}: one per connection, ${clients} clients: ${outcome.rate}/s p50 ${outcome.p50Ms} ms (mismatches ${outcome.mismatches}, errors ${outcome.errors})`);
		}
	}

	if (wanted('wrong')) {
		result.wrong = await load({...base, mode: 'oneshot', clients: 8, wrongShare: 0.5});
		log(`${name}: 50 % wrong, 8 clients: ${result.wrong.rate}/s (mismatches ${result.wrong.mismatches})`);
	}

	if (wanted('pipelined') && name === 'pam-authservice') {
		for (const clients of [1, 8, 64]) {
			result.pipelined[clients] = await load({...base, mode: 'pipelined', clients, depth: 16});
			log(`${name}: pipelined, ${clients} clients: ${result.pipelined[clients].rate}/s`);
		}
	}

	result.rssAfterLoadMiB = rssMiB(running.pids);

	if (wanted('head-of-line')) {
		// 20 clients keep a stack with a 1 s failure delay busy with wrong passwords; one client logs in.
		const attack = load({...base, mode: 'oneshot', clients: 20, wrongShare: 1, service: 'faildelay', seconds: 6, timeoutMs: 12_000});
		await sleep(500);
		result.headOfLine = await load({...base, mode: 'oneshot', clients: 1, seconds: 4, timeoutMs: 12_000});
		await attack;
		log(`${name}: head-of-line good login p50 ${result.headOfLine.p50Ms} ms p99 ${result.headOfLine.p99Ms} ms (answered ${result.headOfLine.done}, errors ${result.headOfLine.errors})`);
	}

	if (wanted('idle-flood')) {
		result.idleFlood = {};
		for (const count of [1100, 10_000]) {
			if (!alive(running.pids)) {
				result.idleFlood[count] = {alive: false};
				continue;
			}

			// The holder raises its own open-files limit to the hard one: it needs one per connection.
			const holder = spawn('sh', ['-c', 'ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"', process.execPath, path.join(root, 'bench/idle.mjs'), running.socket, String(count)], {stdio: ['pipe', 'pipe', 'inherit']});
			const opened = JSON.parse(await new Promise(resolve => {
				holder.stdout.once('data', resolve);
				holder.once('exit', () => resolve('{"open":0,"failed":0,"holderDied":true}'));
			}));
			const login = await load({...base, mode: 'oneshot', clients: 1, count: 1, timeoutMs: 8000});
			result.idleFlood[count] = {...opened, loginMs: login.done > 0 ? login.p50Ms : null, answered: login.done > 0 && login.mismatches === 0, alive: alive(running.pids)};
			holder.stdin.end();
			await new Promise(resolve => holder.on('exit', resolve));
			log(`${name}: ${count} idle connections (${opened.open} open): good login ${result.idleFlood[count].loginMs ?? 'no answer'} ms, alive ${result.idleFlood[count].alive}`);
			await sleep(300);
		}
	}

	try {
		running.stop();
	} catch {}

	await sleep(300);
	return result;
}

// --- Report -------------------------------------------------------------------------------------
function machine() {
	const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
	return {date: new Date().toISOString(), cores: os.cpus().length, cpu, node: process.version, kernel: os.release()};
}

function table(report) {
	const peersMeasured = report.peers;
	const get = (name, pick) => {
		const peer = peersMeasured.find(entry => entry.name === name);
		try {
			const value = peer && pick(peer);
			return value === undefined || value === null ? '–' : String(value);
		} catch {
			return '–';
		}
	};

	const names = peersMeasured.map(peer => peer.name);
	const rows = [
		['one request per connection, 1 client', peer => `${peer.throughput[1].rate} /s (p50 ${peer.throughput[1].p50Ms} ms)`],
		['same, 8 clients', peer => `${peer.throughput[8].rate} /s`],
		['same, 64 clients', peer => `${peer.throughput[64].rate} /s`],
		['50 % wrong passwords, 8 clients', peer => `${peer.wrong.rate} /s`],
		['pipelined, 1 / 8 / 64 clients', peer => peer.pipelined[1] ? `${peer.pipelined[1].rate} / ${peer.pipelined[8].rate} / ${peer.pipelined[64].rate} /s` : 'n/a'],
		['good login while 20 clients send wrong passwords (1 s fail delay)', peer => peer.headOfLine.done > 0 ? `p50 ${peer.headOfLine.p50Ms} ms, p99 ${peer.headOfLine.p99Ms} ms` : 'none answered'],
		['1 100 idle connections, then a good login', peer => peer.idleFlood[1100].answered ? `${peer.idleFlood[1100].loginMs} ms${peer.idleFlood[1100].alive ? '' : ', then died'}` : `no answer${peer.idleFlood[1100].alive ? '' : ', daemon dead'}`],
		['10 000 idle connections, then a good login', peer => peer.idleFlood[10_000].answered ? `${peer.idleFlood[10_000].loginMs} ms${peer.idleFlood[10_000].alive ? '' : ', then died'}` : `no answer${peer.idleFlood[10_000].alive ? '' : ', daemon dead'}`],
		['CPU per request (8 clients, one per connection)', peer => `${peer.throughput[8].cpuMsPerRequest} ms`],
		['resident memory idle / after load', peer => `${peer.rssIdleMiB} / ${peer.rssAfterLoadMiB} MiB`],
		['time from start to serving', peer => `${peer.startMs} ms`],
	];
	const lines = [
		`| | ${names.join(' | ')} |`,
		`|---|${names.map(() => '---').join('|')}|`,
		...rows.map(([label, pick]) => `| ${label} | ${names.map(name => get(name, pick)).join(' | ')} |`),
	];
	return lines.join('\n');
}

function targets(report) {
	const ours = report.peers.find(peer => peer.name === 'pam-authservice');
	const sasl = report.peers.find(peer => peer.name === 'saslauthd');
	const loop1 = report.loop?.[1]?.rate;
	const check = (label, pass, measured) => ({label, pass, measured});
	const list = [];
	const safe = fn => {
		try {
			return fn();
		} catch {
			return undefined;
		}
	};

	if (ours) {
		list.push(safe(() => check('pipelined, 64 clients ≥ 0.9× the single-thread in-process loop', ours.pipelined[64].rate >= 0.9 * loop1, `${ours.pipelined[64].rate} vs ${Math.round(0.9 * loop1)} (loop ${loop1})`)));
		list.push(safe(() => check('one per connection, 8 clients ≥ 1.1× saslauthd', ours.throughput[8].rate >= 1.1 * sasl.throughput[8].rate, `${ours.throughput[8].rate} vs ${Math.round(1.1 * sasl.throughput[8].rate)}`)));
		list.push(safe(() => check('one per connection, 64 clients ≥ 1.1× saslauthd', ours.throughput[64].rate >= 1.1 * sasl.throughput[64].rate, `${ours.throughput[64].rate} vs ${Math.round(1.1 * sasl.throughput[64].rate)}`)));
		list.push(safe(() => check('one per connection, 1 client: median latency ≤ saslauthd\'s', ours.throughput[1].p50Ms <= sasl.throughput[1].p50Ms, `${ours.throughput[1].p50Ms} ms vs ${sasl.throughput[1].p50Ms} ms`)));
		list.push(safe(() => check('head-of-line: good login p99 ≤ 10 ms', ours.headOfLine.p99Ms <= 10, `${ours.headOfLine.p99Ms} ms`)));
		for (const count of [1100, 10_000]) {
			list.push(safe(() => check(`idle flood ${count}: good login ≤ 20 ms, daemon alive`, ours.idleFlood[count].answered && ours.idleFlood[count].loginMs <= 20 && ours.idleFlood[count].alive, `${ours.idleFlood[count].loginMs} ms, alive ${ours.idleFlood[count].alive}`)));
		}

		list.push(safe(() => check('CPU per request ≤ saslauthd\'s', ours.throughput[8].cpuMsPerRequest <= sasl.throughput[8].cpuMsPerRequest, `${ours.throughput[8].cpuMsPerRequest} vs ${sasl.throughput[8].cpuMsPerRequest} ms`)));
		list.push(safe(() => check('memory ≤ 45 MiB idle', ours.rssIdleMiB <= 45, `${ours.rssIdleMiB} MiB`)));
		list.push(safe(() => check('memory ≤ 80 MiB after load', ours.rssAfterLoadMiB <= 80, `${ours.rssAfterLoadMiB} MiB`)));
	}

	return list.filter(Boolean);
}

function chart(report) {
	const width = 720;
	const height = 360;
	const left = 70;
	const bottom = 300;
	const clients = [1, 8, 64];
	const series = report.peers.filter(peer => peer.throughput?.[1]).map(peer => ({name: `${peer.name} (one per connection)`, values: clients.map(count => peer.throughput[count].rate)}));
	const ours = report.peers.find(peer => peer.name === 'pam-authservice');
	if (ours?.pipelined?.[1]) {
		series.push({name: 'pam-authservice (pipelined)', values: clients.map(count => ours.pipelined[count].rate)});
	}

	if (report.loop?.[1]) {
		series.push({name: 'in-process libpam loop, 1 thread', values: clients.map(() => report.loop[1].rate)});
	}

	const max = Math.max(1, ...series.flatMap(entry => entry.values)) * 1.1;
	const x = index => left + 40 + index * ((width - left - 200) / (clients.length - 1));
	const y = value => bottom - value / max * (bottom - 40);
	const colours = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#7f7f7f'];
	const parts = [
		`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
		`<rect width="${width}" height="${height}" fill="white"/>`,
		`<text x="${left}" y="20" font-size="14">Checks per second against concurrent clients (pam_wrapper + pam_matrix, ${users} users)</text>`,
		`<line x1="${left}" y1="${bottom}" x2="${width - 160}" y2="${bottom}" stroke="black"/><line x1="${left}" y1="40" x2="${left}" y2="${bottom}" stroke="black"/>`,
		...clients.map((count, index) => `<text x="${x(index)}" y="${bottom + 18}" text-anchor="middle">${count} client${count > 1 ? 's' : ''}</text>`),
		...[0, 0.25, 0.5, 0.75, 1].map(share => `<text x="${left - 6}" y="${y(max * share) + 4}" text-anchor="end">${Math.round(max * share)}</text><line x1="${left}" y1="${y(max * share)}" x2="${width - 160}" y2="${y(max * share)}" stroke="#eee"/>`),
		...series.map((entry, index) => {
			const colour = colours[index % colours.length];
			const points = entry.values.map((value, point) => `${x(point)},${y(value)}`).join(' ');
			return `<polyline fill="none" stroke="${colour}" stroke-width="2" points="${points}"/>${entry.values.map((value, point) => `<circle cx="${x(point)}" cy="${y(value)}" r="3" fill="${colour}"/>`).join('')}<text x="${width - 150}" y="${60 + index * 18}" fill="${colour}">${entry.name}</text>`;
		}),
		`<text x="${left}" y="${height - 20}" fill="#555">Head-of-line (good login while 20 clients hit a 1 s fail delay), p99: ${report.peers.map(peer => `${peer.name} ${peer.headOfLine?.done ? `${peer.headOfLine.p99Ms} ms` : 'no answer'}`).join('; ')}</text>`,
		`<text x="${left}" y="${height - 5}" fill="#555">${report.machine.date.slice(0, 10)}, ${report.machine.cores} cores, ${report.machine.cpu}, Node ${report.machine.node}</text>`,
		'</svg>',
	];
	return `${parts.join('\n')}\n`;
}

// --- Main ---------------------------------------------------------------------------------------
const prepared = setup();
const {createPamSandbox, matrixStack} = await import(path.join(root, 'dist/sandbox.js'));
const directory = path.join(os.tmpdir(), `pam-authservice-bench-${process.pid}`);
mkdirSync(directory, {recursive: true});
const sandbox = createPamSandbox({
	directory,
	users: Array.from({length: users}, (_, index) => ({user: `u${index}`, password: `pw-${index}-secret`, service: 'x2gobroker'})),
	services: {
		x2gobroker: matrixStack,
		faildelay: 'auth optional ${lib}/pam_faildelay.so delay=1000000\nauth required ${matrix}\naccount required ${matrix}\n',
	},
});

const report = {machine: machine(), users, seconds, peers: []};
try {
	log('load generator self-test against a server that answers at once');
	const trivialSocket = path.join(directory, 'trivial.socket');
	const trivial = await trivialServer(trivialSocket);
	report.loadGenerator = {
		pipelined64: await load({socket: trivialSocket, protocol: 'line', mode: 'pipelined', clients: 64, depth: 16, seconds}),
		oneshot8: await load({socket: trivialSocket, protocol: 'line', mode: 'oneshot', clients: 8, seconds}),
	};
	trivial.kill();
	log(`load generator alone: pipelined ${report.loadGenerator.pipelined64.rate}/s, one per connection ${report.loadGenerator.oneshot8.rate}/s`);

	report.loop = {};
	for (const threads of [1, 2]) {
		report.loop[threads] = JSON.parse(execFileSync(path.join(cache, 'pam-loop'), ['x2gobroker', 'u5', 'pw-5-secret', String(seconds), String(threads)], {env: {...process.env, ...sandbox.environment}, encoding: 'utf8'}));
		log(`in-process libpam loop, ${threads} thread(s): ${report.loop[threads].rate}/s`);
	}

	for (const [name, peer] of Object.entries(peers(sandbox, prepared, directory))) {
		if (only && ['pam-authservice', 'x2gobroker-authservice', 'saslauthd'].some(candidate => only.has(candidate)) && !only.has(name)) {
			continue;
		}

		try {
			report.peers.push(await measurePeer(name, peer));
		} catch (error) {
			log(`${name}: ${error.message}`);
			report.peers.push({name, error: error.message});
		}
	}
} finally {
	rmSync(directory, {recursive: true, force: true});
}

report.targets = targets(report);
const markdown = [
	`# pam-authservice benchmark, ${report.machine.date.slice(0, 10)}`,
	'',
	`${report.machine.cores} cores (${report.machine.cpu}), Node ${report.machine.node}, Linux ${report.machine.kernel}. One PAM stack for all: pam_wrapper + pam_matrix with ${users} users; ${seconds} s a run; every answer checked (mismatches: ${report.peers.reduce((sum, peer) => sum + (peer.throughput ? Object.values(peer.throughput).reduce((total, run) => total + run.mismatches, 0) : 0), 0)}).`,
	`The load generator alone (against a server that answers at once): ${report.loadGenerator?.pipelined64?.rate} /s pipelined, ${report.loadGenerator?.oneshot8?.rate} /s one request per connection. The in-process libpam loop: ${report.loop?.[1]?.rate} /s on 1 thread, ${report.loop?.[2]?.rate} /s on 2.`,
	'',
	table(report),
	'',
	...report.peers.map(peer => `- **${peer.name}**: ${peer.note ?? ''}${peer.error ? ` — failed: ${peer.error}` : ''}`),
	'',
	'## Targets',
	'',
	'| target | measured | |',
	'|---|---|---|',
	...report.targets.map(target => `| ${target.label} | ${target.measured} | ${target.pass ? 'pass' : '**not met**'} |`),
	'',
	'![chart](chart.svg)',
	'',
].join('\n');
mkdirSync(results, {recursive: true});
const stamp = report.machine.date.slice(0, 10);
writeFileSync(path.join(results, `${stamp}.json`), `${JSON.stringify(report, null, '\t')}\n`);
writeFileSync(path.join(results, 'latest.json'), `${JSON.stringify(report, null, '\t')}\n`);
writeFileSync(path.join(results, `${stamp}.md`), markdown);
writeFileSync(path.join(results, 'latest.md'), markdown);
writeFileSync(path.join(results, 'chart.svg'), chart(report));
process.stdout.write(markdown);
