// `npm run bench`: pam-authservice against the programs people would use instead, on one PAM stack
// (pam_wrapper + pam_matrix, 1000 users), on this machine's Unix sockets only. Sets itself up
// (Debian packages, the build, x2gobroker unpacked from its .deb, the in-process loop compiled),
// runs bounded scenarios and writes bench/results/{DATE,latest}.{md,json} and chart.svg.
//
// Flags:
//   --quick            shorter runs (1 s instead of 3 s); results go to bench/.cache/results/
//   --only A,B         only these scenarios and/or peers; results go to bench/.cache/results/
//                      scenarios: selftest, wakeup, loop, throughput, head-of-line, idle-flood,
//                      profile
//                      peers: pam-authservice, x2gobroker-authservice, saslauthd
//   --seconds N        length of one throughput run
//   --no-setup         skip apt-get and the build: dist/ is measured as it is
//   --shared-tmp       do not run in a private /tmp (see below)
//   --render [FILE]    no measurement: write the Markdown and the chart again from a run's JSON
//                      (default bench/results/latest.json)
import {execFileSync, spawn, spawnSync} from 'node:child_process';
import {closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {createInterface} from 'node:readline';
import {setTimeout as sleep} from 'node:timers/promises';
import {fileURLToPath} from 'node:url';
import {summariseCpuProfile, summarisePerf} from './profile.mjs';
import {chart, launchText, markdown, targets} from './report.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));

// pam_wrapper names its per-process folder /tmp/pam.X, one character: about 60 processes on
// pam_wrapper at once, machine-wide. Other test runs on the machine would take names from ours
// (a worker that finds none exits, and its check is answered `fail`), so the bench runs in its
// own mount namespace with a private /tmp, where it can. Sockets and results are unaffected.
// (The variable's name must not start with PAM_AUTHSERVICE_: the daemon reads those as options.)
if (!process.env.BENCH_PRIVATE_TMP && !process.argv.includes('--render') && !process.argv.includes('--shared-tmp')) {
	if (spawnSync('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount -t tmpfs bench-tmp /tmp'], {stdio: 'ignore'}).status === 0) {
		const isolated = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount -t tmpfs -o size=1g,mode=1777 bench-tmp /tmp && exec "$@"', 'sh', process.execPath, ...process.argv.slice(1)], {
			stdio: 'inherit',
			env: {...process.env, BENCH_PRIVATE_TMP: '1'},
		});
		for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
			process.on(signal, () => isolated.kill(signal));
		}

		process.exit(await new Promise(resolve => {
			isolated.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
		}));
	}

	process.stderr.write('bench: no private /tmp (unshare --mount is not allowed here): running with the shared one\n');
}

const cache = path.join(root, 'bench/.cache');
const args = process.argv.slice(2);
const flag = name => args.includes(name);
const option = name => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const quick = flag('--quick');
const only = option('--only') ? new Set(option('--only').split(',').map(name => name.trim())) : undefined;
const peerNames = ['pam-authservice', 'x2gobroker-authservice', 'saslauthd', 'relay-floor'];
const scenarioNames = ['selftest', 'wakeup', 'loop', 'throughput', 'head-of-line', 'idle-flood', 'profile'];
for (const name of only ?? []) {
	if (![...peerNames, ...scenarioNames].includes(name)) {
		throw new Error(`--only: unknown scenario or peer ${name} (scenarios: ${scenarioNames.join(', ')}; peers: ${peerNames.join(', ')})`);
	}
}

const scenarioWanted = name => !only || ![...only].some(entry => scenarioNames.includes(entry)) || only.has(name);
const peerWanted = name => !only || ![...only].some(entry => peerNames.includes(entry)) || only.has(name);
const partial = quick || only !== undefined || option('--seconds') !== undefined;
const results = partial ? path.join(cache, 'results') : path.join(root, 'bench/results');
const seconds = Number(option('--seconds') ?? (quick ? 1 : 3));
/** Unmeasured load before the throughput runs of each mode. */
const warmupSeconds = quick ? 0.5 : 2;
/** How long after the throughput runs memory is read again. */
const settleSeconds = 15;
const holSeconds = quick ? 2 : 4;
/** How many times the cases compared with saslauthd run on every peer, in turns. */
const rounds = quick ? 1 : 3;
const users = 1000;
const clientCounts = [1, 8, 64];
const depth = 16;
// Every program gets the same open-files limit: the hard limit we have (raising it needs
// CAP_SYS_RESOURCE, which a container may not give), enough for 10 000 idle connections.
const nofile = Number(spawnSync('sh', ['-c', 'ulimit -Hn'], {encoding: 'utf8'}).stdout.trim()) || 20_000;
const ticksPerSecond = Number(spawnSync('getconf', ['CLK_TCK'], {encoding: 'utf8'}).stdout.trim()) || 100;

// The limits of pam-authservice that a benchmark from one uid would run into, raised; the rest are
// its defaults. It would otherwise (rightly) hold back a caller sending thousands of failures a
// second, and close a 65th connection from one uid.
const raisedLimits = [
	'--free-failures', '1000000000',
	'--failure-budget-burst', '1000000000',
	'--failure-budget-per-second', '1000000000',
	'--max-waiting-per-key', '10000',
	'--max-connections', '20000',
	'--max-connections-per-uid', '20000',
];

function log(message) {
	process.stderr.write(`bench: ${message}\n`);
}

// --- Every process we start is stopped, whatever happens ---------------------------------------
const started = new Set();

function killTree(pid) {
	for (const each of tree(pid).reverse()) {
		try {
			process.kill(each, 'SIGKILL');
		} catch {}
	}
}

function killAll() {
	for (const pid of started) {
		killTree(pid);
	}

	started.clear();
}

let workDirectory;
process.on('exit', () => {
	killAll();
	if (workDirectory) {
		rmSync(workDirectory, {recursive: true, force: true});
	}
});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
	process.on(signal, () => {
		log(`${signal}: stopping everything`);
		process.exit(130);
	});
}

const watchdogMinutes = quick ? 8 : 20;
setTimeout(() => {
	log(`the whole bench ran past ${watchdogMinutes} minutes: stopping everything`);
	process.exit(3);
}, watchdogMinutes * 60_000).unref();

// --- Set-up from nothing ------------------------------------------------------------------------
function installed(name) {
	return /ok installed/.test(spawnSync('dpkg-query', ['-W', '-f=${Status}', name], {encoding: 'utf8'}).stdout ?? '');
}

function apt(...apt) {
	const command = process.getuid() === 0 ? ['apt-get', ...apt] : ['sudo', 'apt-get', ...apt];
	execFileSync(command[0], command.slice(1), {stdio: ['ignore', 'inherit', 'inherit'], env: {...process.env, DEBIAN_FRONTEND: 'noninteractive'}});
}

function setup(quickSetup) {
	// What the peers and the build need. python3-x2gobroker's other dependencies (tornado, paramiko,
	// netaddr, daemon, …) serve the web broker and daemonising: the auth service does not import them.
	const packages = {
		'libpam-wrapper': 'pam_wrapper and pam_matrix, the PAM stack of every peer',
		'libpam0g-dev': 'the worker and the in-process loop are built against libpam',
		'libpam-modules': 'pam_faildelay for the head-of-line stack',
		gcc: 'builds', make: 'builds', 'util-linux': 'prlimit',
		'sasl2-bin': 'saslauthd',
		python3: 'x2gobroker-authservice', 'python3-pampy': 'x2gobroker-authservice', 'python3-setproctitle': 'x2gobroker-authservice',
	};
	const missing = quickSetup ? [] : Object.keys(packages).filter(name => !installed(name));
	if (missing.length > 0) {
		log(`installing ${missing.join(' ')}`);
		apt('update', '-qq');
		apt('install', '-y', '-qq', '--no-install-recommends', ...missing);
	}

	if (!quickSetup && !existsSync(path.join(root, 'node_modules/.bin/tsc'))) {
		log('npm ci');
		execFileSync('npm', ['ci', '--no-audit', '--no-fund'], {cwd: root, stdio: ['ignore', 2, 2]});
	}

	let buildError;
	if (quickSetup) {
		buildError = '--no-setup: dist/ measured as it was, not rebuilt';
	} else {
		log('npm run build');
		try {
			execFileSync('npm', ['run', '--silent', 'build'], {cwd: root, stdio: ['ignore', 2, 2]});
		} catch (error) {
			// Others may be half-way through an edit: measure the last good build, and say so.
			if (!existsSync(path.join(root, 'dist/cli/daemon.js'))) {
				throw error;
			}

			buildError = `npm run build failed (${error.message.split('\n')[0]}): the previous build in dist/ was measured`;
			log(buildError);
		}
	}

	mkdirSync(cache, {recursive: true});
	const tree_ = path.join(cache, 'x2go');
	const site = path.join(tree_, 'usr/lib/python3/dist-packages');
	const script = path.join(tree_, 'usr/sbin/x2gobroker-authservice');
	if (!existsSync(path.join(site, 'x2gobroker/authservice.py')) || !existsSync(script)) {
		log('unpacking x2gobroker-authservice and python3-x2gobroker from Debian\'s packages');
		const downloads = path.join(cache, 'debs');
		rmSync(downloads, {recursive: true, force: true});
		mkdirSync(downloads, {recursive: true});
		const download = () => execFileSync('apt-get', ['download', 'x2gobroker-authservice', 'python3-x2gobroker'], {cwd: downloads, stdio: ['ignore', 'ignore', 'inherit']});
		try {
			download();
		} catch {
			apt('update', '-qq');
			download();
		}

		for (const file of readdirSync(downloads).filter(name => name.endsWith('.deb'))) {
			execFileSync('dpkg-deb', ['-x', path.join(downloads, file), tree_]);
		}
	}

	const x2goVersion = readdirSync(path.join(cache, 'debs')).find(name => name.startsWith('x2gobroker-authservice_'))?.split('_')[1] ?? 'unknown';
	const compile = (name, ...libraries) => {
		const output = path.join(cache, name);
		const source = path.join(root, `bench/${name}.c`);
		if (!existsSync(output) || statSync(output).mtimeMs < statSync(source).mtimeMs) {
			execFileSync('cc', ['-O2', '-Wall', '-o', output, source, ...libraries]);
		}

		return output;
	};

	const loop = compile('pam-loop', '-lpam', '-lpthread');
	const trivialServer = compile('trivial-server');
	const oneshotLoad = compile('oneshot-load', '-lm');
	const wakeup = compile('wakeup');

	const perf = spawnSync('perf', ['--version'], {encoding: 'utf8'}).status === 0;
	return {site, script, loop, trivialServer, oneshotLoad, wakeup, ...daemonLaunch(), x2goVersion, perf, buildError};
}

// --- Processes ----------------------------------------------------------------------------------
function processTable() {
	const table = new Map();
	for (const entry of readdirSync('/proc')) {
		if (!/^\d+$/.test(entry)) {
			continue;
		}

		try {
			const stat = readFileSync(`/proc/${entry}/stat`, 'latin1');
			const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
			table.set(Number(entry), {
				pid: Number(entry),
				comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')),
				parent: Number(fields[1]),
				// utime, stime, cutime, cstime (fields 14 to 17 of stat).
				ticks: Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]),
				userTicks: Number(fields[11]) + Number(fields[13]),
				systemTicks: Number(fields[12]) + Number(fields[14]),
			});
		} catch {}
	}

	return table;
}

/** `pid` and every process below it. */
function tree(pid, table = processTable()) {
	const all = table.has(pid) ? [pid] : [];
	for (let index = 0; index < all.length; index++) {
		for (const entry of table.values()) {
			if (entry.parent === all[index]) {
				all.push(entry.pid);
			}
		}
	}

	return all;
}

function treeEntries(pids) {
	const table = processTable();
	return [...new Set(pids.flatMap(pid => tree(pid, table)))].map(pid => table.get(pid));
}

/**
Resident memory of the process trees, in MiB, and each process's share; each split into anonymous
pages (the process's own: heap, stacks) and pages mapped from files (executables and libraries,
shared with every process that maps them, and dropped first when memory is short).
*/
function memory(pids) {
	const processes = [];
	for (const entry of treeEntries(pids)) {
		try {
			const status = readFileSync(`/proc/${entry.pid}/status`, 'utf8');
			const mib = field => Math.round(Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0) / 102.4) / 10;
			processes.push({pid: entry.pid, comm: entry.comm, rssMiB: mib('VmRSS'), anonMiB: mib('RssAnon'), fileMiB: mib('RssFile')});
		} catch {}
	}

	const sum = key => Math.round(processes.reduce((total, entry) => total + entry[key], 0) * 10) / 10;
	return {totalMiB: sum('rssMiB'), anonMiB: sum('anonMiB'), fileMiB: sum('fileMiB'), processes};
}

/** CPU seconds of the process trees, reaped children included. */
function cpuSeconds(pids) {
	return treeEntries(pids).reduce((sum, entry) => sum + entry.ticks, 0) / ticksPerSecond;
}

/** CPU seconds the whole machine was busy, all cores. */
function machineBusySeconds() {
	const fields = readFileSync('/proc/stat', 'latin1').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
	// user nice system idle iowait irq softirq steal
	return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]) / ticksPerSecond;
}

function alive(pid) {
	try {
		process.kill(pid, 0);
		return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
	} catch {
		return false;
	}
}

async function answers(socketPath) {
	const net = await import('node:net');
	return new Promise(resolve => {
		const socket = net.connect(socketPath, () => {
			socket.destroy();
			resolve(true);
		});
		socket.on('error', () => resolve(false));
	});
}

async function waitForSocket(socketPath, pid, timeoutMs = 15_000, logFile = undefined) {
	const begun = performance.now();
	while (!(await answers(socketPath))) {
		if (performance.now() - begun > timeoutMs || (pid !== undefined && !alive(pid))) {
			const said = logFile && existsSync(logFile) ? `: ${readFileSync(logFile, 'utf8').trim().split('\n').slice(-3).join(' | ').slice(0, 600)}` : '';
			throw new Error(`nothing answers on ${socketPath}${said}`);
		}

		await sleep(2);
	}

	return performance.now() - begun;
}

/** A child process under a raised open-files limit (prlimit execs the command: same pid). */
function spawnTracked(command, commandArgs, options) {
	const child = spawn('prlimit', [`--nofile=${nofile}:${nofile}`, '--', command, ...commandArgs], options);
	started.add(child.pid);
	child.on('exit', () => started.delete(child.pid));
	return child;
}

async function stopTree(pid, signal = 'SIGTERM', graceMs = 5000) {
	const pids = tree(pid);
	try {
		process.kill(pid, signal);
	} catch {}

	const deadline = performance.now() + graceMs;
	while (alive(pid) && performance.now() < deadline) {
		await sleep(20);
	}

	for (const each of pids) {
		try {
			process.kill(each, 'SIGKILL');
		} catch {}
	}

	started.delete(pid);
}

// --- The peers ----------------------------------------------------------------------------------
/** Resolves once one of the benchmark's own servers prints its first line (it listens then). */
async function serverReady(child, what) {
	await new Promise((resolve, reject) => {
		child.stdout.once('data', resolve);
		child.once('exit', () => reject(new Error(`${what} did not start`)));
	});
}

/** Load that is not measured, before a mode's runs: a JIT compiles its hot paths, a pool starts its workers. */
async function warmUp(running, protocol, mode) {
	return load({socket: running.socket, protocol, mode, clients: 8, depth, seconds: warmupSeconds, wrongShare: 0.5});
}

/**
Node's flags and environment from the daemon's first line (`#!/usr/bin/env -S [NAME=VALUE ...] node
FLAGS`), as its package runs it: the daemon and the floors run under both.
*/
function daemonLaunch() {
	const shebang = readFileSync(path.join(root, 'dist/cli/daemon.js'), 'utf8').split('\n', 1)[0];
	const [, variables = '', flags = ''] = /^#!\/usr\/bin\/env -S ((?:\w+=\S*\s+)*)node\s+(.+)$/.exec(shebang) ?? [];
	return {
		daemonNodeFlags: flags.split(/\s+/).filter(Boolean),
		daemonEnvironment: Object.fromEntries(variables.split(/\s+/).filter(Boolean).map(variable => [variable.slice(0, variable.indexOf('=')), variable.slice(variable.indexOf('=') + 1)])),
	};
}

function peerDefinitions(sandbox, prepared, directory, relayWorkers) {
	const env = {...process.env, ...sandbox.environment};
	// The daemon and the design's floor run under the environment of the daemon's first line.
	const daemonEnv = {...env, ...prepared.daemonEnvironment};
	const me = os.userInfo().username;
	const logFile = name => openSync(path.join(directory, `${name}.log`), 'a');
	return {
		'pam-authservice': {
			protocol: 'line',
			pipelining: true,
			note: `this project (dist/ built from the working tree), run as its package runs it (\`${launchText(prepared.daemonEnvironment, prepared.daemonNodeFlags)}\`), its defaults except ${raisedLimits.join(' ')}: the load generator is one uid sending thousands of failures a second over up to 10 000 connections. Logs (JSON, one line a request) to a file.`,
			async start({nodeFlags = [], extraArgs = []} = {}) {
				const socket = path.join(directory, 'pam-authservice.socket');
				const out = logFile('pam-authservice');
				const child = spawnTracked(process.execPath, [...prepared.daemonNodeFlags, ...nodeFlags, path.join(root, 'dist/cli/daemon.js'), '--config', '/dev/null', '-s', socket,
					'--owner', String(process.getuid()), '--group', String(process.getgid()), '--services', 'x2gobroker', 'faildelay', ...raisedLimits, ...extraArgs],
				{env: daemonEnv, stdio: ['ignore', out, out]});
				closeSync(out);
				return {socket, pid: child.pid, logFile: path.join(directory, 'pam-authservice.log'), startMs: await waitForSocket(socket, child.pid, 15_000, path.join(directory, 'pam-authservice.log')), stop: async () => stopTree(child.pid)};
			},
		},
		'x2gobroker-authservice': {
			protocol: 'line',
			pipelining: true,
			note: `Debian's x2gobroker-authservice ${prepared.x2goVersion} (asyncore, single thread; the same request line protocol), its own start script run unchanged from the unpacked package with /usr/bin/python3 and its shipped logging configuration (warnings to a file); python-pam's library lookup pointed at pam_wrapper (bench/x2go-runner.py).`,
			async start() {
				const socket = path.join(directory, 'x2go', 'x2gobroker-authservice.socket');
				const loggerConfig = path.join(directory, 'x2gobroker-authservice-logger.conf');
				writeFileSync(loggerConfig, readFileSync(path.join(cache, 'x2go/etc/x2go/broker/x2gobroker-authservice-logger.conf'), 'utf8')
					.replace('/var/log/x2gobroker/authservice.log', path.join(directory, 'x2gobroker-authservice.file.log')));
				const out = logFile('x2gobroker-authservice');
				const child = spawnTracked('/usr/bin/python3', [path.join(root, 'bench/x2go-runner.py'), prepared.site, prepared.script, '-s', socket, '-o', me, '-g', me],
					{env: {...env, X2GOBROKER_AUTHSERVICE_LOGCONFIG: loggerConfig}, stdio: ['ignore', out, out]});
				closeSync(out);
				return {socket, pid: child.pid, logFile: path.join(directory, 'x2gobroker-authservice.log'), startMs: await waitForSocket(socket, child.pid, 15_000, path.join(directory, 'x2gobroker-authservice.log')), stop: async () => stopTree(child.pid)};
			},
		},
		// Not a program anyone would run: the floor of this project's design, for the report. It
		// takes turns with the others in the cases compared with saslauthd, and nothing else.
		'relay-floor': {
			protocol: 'line',
			pipelining: false,
			reference: true,
			note: `bench/relay-floor.mjs: a bare Node.js server relaying each request line to this project's own PAM workers (the same C program and frames), ${relayWorkers} of them, as many as the daemon starts under load with its defaults; no log, no limits, no throttle, no time-outs. Run with the daemon's Node.js flags.`,
			async start() {
				const socket = path.join(directory, 'relay-floor.socket');
				const begun = performance.now();
				const child = spawnTracked(process.execPath, [...prepared.daemonNodeFlags, path.join(root, 'bench/relay-floor.mjs'), socket, path.join(root, 'build/pam-authservice-worker'), String(relayWorkers)],
					{env: daemonEnv, stdio: ['ignore', 'pipe', 'inherit']});
				await serverReady(child, 'the relay floor');
				return {socket, pid: child.pid, startMs: performance.now() - begun, stop: async () => stopTree(child.pid)};
			},
		},
		saslauthd: {
			protocol: 'sasl',
			pipelining: false,
			note: 'Cyrus saslauthd -a pam -n 5 (five pre-forked processes; its own protocol: length-prefixed user, password, service, realm; one request per connection, then it closes).',
			async start() {
				const mux = path.join(directory, 'saslauthd');
				rmSync(mux, {recursive: true, force: true});
				mkdirSync(mux, {recursive: true});
				const begun = performance.now();
				// It goes to the background by itself; the parent exits once the children are forked.
				const parent = spawnTracked('/usr/sbin/saslauthd', ['-a', 'pam', '-n', '5', '-m', mux], {env, stdio: 'ignore'});
				await new Promise(resolve => parent.on('exit', resolve));
				const socket = path.join(mux, 'mux');
				await waitForSocket(socket);
				const pid = Number(readFileSync(path.join(mux, 'saslauthd.pid'), 'utf8'));
				started.add(pid);
				return {socket, pid, startMs: performance.now() - begun, stop: async () => stopTree(pid)};
			},
		},
	};
}

// --- Load ---------------------------------------------------------------------------------------
async function load(spec) {
	// One load generator process: two (spec.processes) do more against the trivial server, but on
	// 2 cores they take twice the CPU per request from the program measured (saslauthd, 8 clients:
	// 5 000 /s instead of 7 900 /s). One request per connection is the C generator's (a Node.js
	// client connection cost 40 µs of CPU); pipelined is load.mjs's.
	const full = {users, timeoutMs: 10_000, ...spec};
	const child = full.mode === 'oneshot' && prepared.oneshotLoad && !full.processes && !full.emitLatencies
		? spawn(prepared.oneshotLoad, [full.socket, full.protocol ?? 'line', String(full.clients), String(full.seconds ?? 0), String(full.count ?? 0), String(full.wrongShare ?? 0), String(full.users), full.service ?? 'x2gobroker', String(full.timeoutMs)], {stdio: ['ignore', 'pipe', 'inherit']})
		: spawn(process.execPath, [path.join(root, 'bench/load.mjs'), JSON.stringify(full)], {stdio: ['ignore', 'pipe', 'inherit']});
	started.add(child.pid);
	let output = '';
	child.stdout.on('data', chunk => {
		output += chunk;
	});
	await new Promise(resolve => child.on('exit', resolve));
	started.delete(child.pid);
	return JSON.parse(output);
}

/** A load run with the peer's CPU time (daemon and workers) and the machine's, over the run. */
async function measuredLoad(running, spec) {
	const cpuBefore = cpuSeconds([running.pid]);
	const machineBefore = machineBusySeconds();
	const outcome = await load({socket: running.socket, ...spec});
	const peerCpu = cpuSeconds([running.pid]) - cpuBefore;
	const machine = machineBusySeconds() - machineBefore;
	return {
		...outcome,
		cpuMsPerRequest: outcome.done > 0 ? Math.round(peerCpu / outcome.done * 1e6) / 1e3 : null,
		peerCpuCores: Math.round(peerCpu / outcome.seconds * 100) / 100,
		// Busy CPU of everything else on the machine (other test runs would show here): noise.
		otherCpuCores: Math.round(Math.max(0, machine - peerCpu - (outcome.loadCpuCores * outcome.seconds)) / outcome.seconds * 100) / 100,
	};
}

async function sanity(peer, running) {
	const base = {socket: running.socket, protocol: peer.protocol, mode: 'oneshot', clients: 1, count: 1, timeoutMs: 5000};
	const good = await load({...base, wrongShare: 0});
	const wrong = await load({...base, wrongShare: 1});
	const passed = good.done === 1 && good.mismatches === 0 && wrong.done === 1 && wrong.mismatches === 0;
	return {passed, detail: `passdb user u0 with its password: ${good.done === 1 ? (good.mismatches === 0 ? 'ok' : 'fail') : 'no answer'}; with a wrong one: ${wrong.done === 1 ? (wrong.mismatches === 0 ? 'fail' : 'ok') : 'no answer'}`};
}

// --- Scenarios ----------------------------------------------------------------------------------
async function throughput(entries) {
	for (const {result} of entries) {
		result.runs = [];
		result.warmup = [];
	}

	const cases = [];
	for (const mode of ['oneshot', 'pipelined']) {
		for (const wrongShare of [0, 0.5]) {
			for (const clients of clientCounts) {
				// The cases with a target against saslauthd, taken `rounds` times: one round's ratio
				// moves by ±10 %, as much as the margin asked for.
				const repeat = mode === 'oneshot' && wrongShare === 0 ? rounds : 1;
				for (let round = 1; round <= repeat; round++) {
					cases.push({mode, clients, wrongShare, ...(repeat > 1 ? {round} : {})});
				}
			}
		}
	}

	// A reference (the relay floor) takes only the cases compared with saslauthd.
	const takes = (entry, {mode, wrongShare}) => !entry.result.error && (mode === 'oneshot' || entry.peer.pipelining) && (!entry.peer.reference || wrongShare === 0);
	for (const [index, spec] of cases.entries()) {
		// Every other case the other way round: no peer always runs right after the same one.
		const turn = index % 2 === 0 ? entries : [...entries].reverse();
		for (const entry of turn.filter(each => takes(each, spec))) {
			const {name, peer, result, running} = entry;
			try {
				if (!result.warmup.some(outcome => outcome.mode === spec.mode)) {
					// eslint-disable-next-line no-await-in-loop
					result.warmup.push({mode: spec.mode, ...await warmUp(running, peer.protocol, spec.mode)});
				}

				// eslint-disable-next-line no-await-in-loop
				const outcome = await measuredLoad(running, {protocol: peer.protocol, depth, seconds, ...spec});
				result.runs.push({...spec, ...outcome});
				log(`${name}: ${spec.mode}, ${spec.clients} clients, ${spec.wrongShare * 100} % wrong${spec.round ? ` (round ${spec.round})` : ''}: ${outcome.rate}/s p50 ${outcome.p50Ms} p99 ${outcome.p99Ms} ms, CPU ${outcome.cpuMsPerRequest} ms/request (mismatches ${outcome.mismatches}, errors ${outcome.errors}, connect retries ${outcome.connectRetries}, other CPU ${outcome.otherCpuCores})`);
				if (!cases.slice(index + 1).some(later => takes(entry, later))) {
					// eslint-disable-next-line no-await-in-loop
					await sleep(300);
					result.memoryAfterLoad = memory([running.pid]);
					log(`${name}: memory idle ${result.memoryIdle.totalMiB} MiB, after its throughput runs ${result.memoryAfterLoad.totalMiB} MiB (${result.memoryAfterLoad.processes.length} processes)`);
				}
			} catch (error) {
				log(`${name}: ${error.stack}`);
				result.error = error.message;
			}
		}
	}
}

async function headOfLine(name, peer, running) {
	// 20 clients keep a stack with a 1 s failure delay busy with wrong passwords; one client logs in
	// with right passwords, one request per connection, on the ordinary service.
	const base = {socket: running.socket, protocol: peer.protocol, mode: 'oneshot'};
	const attack = load({...base, clients: 20, wrongShare: 1, service: 'faildelay', seconds: holSeconds + 1.5, timeoutMs: 10_000});
	await sleep(500);
	const good = await load({...base, clients: 1, wrongShare: 0, seconds: holSeconds, timeoutMs: 8000});
	const attacked = await attack;
	log(`${name}: head-of-line: good login p50 ${good.p50Ms} ms p99 ${good.p99Ms} ms (answered ${good.done}, errors ${good.errors}); attack answered ${attacked.done} (mismatches ${attacked.mismatches})`);
	return {good, attack: attacked};
}

async function idleFlood(name, peer, running, count) {
	const holder = spawnTracked(process.execPath, [path.join(root, 'bench/idle.mjs'), running.socket, String(count), '8'], {stdio: ['pipe', 'pipe', 'inherit']});
	const lines = createInterface({input: holder.stdout})[Symbol.asyncIterator]();
	const next = async () => Promise.race([lines.next().then(line => JSON.parse(line.value)), sleep(15_000).then(() => ({timedOut: true}))]);
	const opened = await next();
	const logins = [];
	for (let index = 0; index < 5; index++) {
		// eslint-disable-next-line no-await-in-loop
		const login = await load({socket: running.socket, protocol: peer.protocol, mode: 'oneshot', clients: 1, count: 1, wrongShare: 0, timeoutMs: 3000});
		logins.push(login.done === 1 && login.mismatches === 0 ? login.p50Ms : null);
		if (login.done === 0) {
			break;
		}
	}

	holder.stdin.write('status\n');
	const status = await next();
	const aliveWithConnections = alive(running.pid);
	holder.stdin.end();
	await Promise.race([new Promise(resolve => holder.on('exit', resolve)), sleep(5000)]);
	await sleep(300);
	const after = alive(running.pid) ? await load({socket: running.socket, protocol: peer.protocol, mode: 'oneshot', clients: 1, count: 1, wrongShare: 0, timeoutMs: 3000}) : undefined;
	// What a peer that died said last (its standard error), for the report.
	// (Python's last traceback line that names an error; a clean-up handler's complaint may follow it.)
	const lastWords = !aliveWithConnections && running.logFile && existsSync(running.logFile)
		? (lines => lines.find(line => /^[\w.]*(Error|Exception)\b.*:/.test(line)) ?? lines.at(-1))(readFileSync(running.logFile, 'utf8').split('\n').map(line => line.trim()).filter(Boolean))?.slice(0, 200)
		: undefined;
	const result = {
		count,
		lastWords,
		opened,
		stillOpenAtEnd: status.stillOpen,
		loginsMs: logins,
		firstLoginMs: logins[0] ?? null,
		worstLoginMs: logins.includes(null) ? null : Math.max(...logins),
		alive: aliveWithConnections,
		servesAfterwards: after?.done === 1 && after.mismatches === 0,
	};
	log(`${name}: ${count} idle connections (${opened.open} open, ${opened.failed} failed): good logins ${logins.map(ms => ms ?? 'no answer').join(', ')} ms; alive ${result.alive}; serves afterwards ${result.servesAfterwards}`);
	return result;
}

/** Warnings and errors in pam-authservice's JSON log: a worker that could not start would show here. */
function logWarnings(file) {
	const found = {count: 0, messages: {}};
	if (!file || !existsSync(file)) {
		return found;
	}

	for (const line of readFileSync(file, 'utf8').split('\n')) {
		const match = /"level":"(warn|error|fatal)".*"msg":"([^"]*)"/.exec(line);
		if (match) {
			found.count++;
			const stderr = /"stderr":"([^"]{0,120})/.exec(line)?.[1];
			const key = `${match[1]}: ${match[2]}${stderr ? ` (${stderr})` : ''}`;
			found.messages[key] = (found.messages[key] ?? 0) + 1;
		}
	}

	return found;
}

/** pam_wrapper's folders /tmp/pam.X (one character: a few dozen names), and how many belong to live processes. */
function pamWrapperFolders() {
	let live = 0;
	let all = 0;
	for (const name of readdirSync('/tmp').filter(entry => /^pam\.\w$/.test(entry))) {
		all++;
		try {
			if (alive(Number(readFileSync(`/tmp/${name}/pid`, 'utf8')))) {
				live++;
			}
		} catch {}
	}

	return {all, live};
}

/** A peer's result, and how to start it (each start's time is recorded). */
function peerEntry(name, peer) {
	const result = {name, note: peer.note, protocol: peer.protocol, startMs: []};
	const start = async options => {
		const running = await peer.start(options);
		result.startMs.push(Math.round(running.startMs * 10) / 10);
		result.logFile = running.logFile;
		return running;
	};

	return {name, peer, result, start};
}

/**
The peers side by side: every peer started and checked, its idle memory read, then the throughput
runs case by case, each case on every peer before the next case (this machine's speed drifts by
10-20 % within minutes: a ratio between peers compares runs seconds apart, not minutes), then their
memory after the load. A peer that fails is reported and left out of what follows.
*/
async function measureSideBySide(entries) {
	const live = [];
	for (const entry of entries) {
		log(`${entry.name}: starting`);
		try {
			// eslint-disable-next-line no-await-in-loop
			entry.running = await entry.start();
			// eslint-disable-next-line no-await-in-loop
			entry.result.sanity = await sanity(entry.peer, entry.running);
			log(`${entry.name}: sanity: ${entry.result.sanity.detail}`);
			if (entry.result.sanity.passed) {
				live.push(entry);
				continue;
			}

			entry.result.error = `does not check against the sandbox as expected (${entry.result.sanity.detail})`;
		} catch (error) {
			log(`${entry.name}: ${error.stack}`);
			entry.result.error = error.message;
		}

		// eslint-disable-next-line no-await-in-loop
		await entry.running?.stop();
	}

	try {
		await sleep(1000);
		for (const entry of live) {
			entry.result.memoryIdle = memory([entry.running.pid]);
		}

		if (scenarioWanted('throughput')) {
			await throughput(live);
			if (!quick) {
				// What a garbage-collected runtime gives back once the load is over.
				await sleep(settleSeconds * 1000);
				for (const entry of live.filter(each => !each.result.error)) {
					entry.result.memorySettled = memory([entry.running.pid]);
					log(`${entry.name}: memory ${settleSeconds} s after the throughput runs ${entry.result.memorySettled.totalMiB} MiB`);
				}
			}
		}
	} finally {
		for (const entry of live) {
			// eslint-disable-next-line no-await-in-loop
			await entry.running.stop();
		}
	}
}

/** The scenarios that need a fresh peer each: head-of-line, the idle floods. */
async function measureAlone({name, peer, result, start}) {
	let running;
	if (scenarioWanted('head-of-line')) {
		running = await start();
		try {
			result.headOfLine = await headOfLine(name, peer, running);
		} finally {
			await running.stop();
		}
	}

	if (scenarioWanted('idle-flood')) {
		result.idleFlood = {};
		for (const count of [1100, 10_000]) {
			// eslint-disable-next-line no-await-in-loop
			running = await start();
			try {
				// eslint-disable-next-line no-await-in-loop
				result.idleFlood[count] = await idleFlood(name, peer, running, count);
			} finally {
				// eslint-disable-next-line no-await-in-loop
				await running.stop();
			}
		}
	}
}

/** pam-authservice under `node --cpu-prof` (and `perf record` of the whole machine, if there is perf) during one load. */
async function profileRun(peer, prepared, directory, spec) {
	const profileDirectory = path.join(directory, `cpu-profile-${spec.mode}`);
	const running = await peer.start({nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${profileDirectory}`]});
	const result = {load: spec};
	let perfData;
	try {
		const before = perThread(running.pid);
		let perf;
		if (prepared.perf) {
			perfData = path.join(directory, `perf-${spec.mode}.data`);
			perf = spawn('perf', ['record', '-e', 'cpu-clock', '-F', '499', '-a', '-o', perfData, '--', 'sleep', String(seconds)], {stdio: 'ignore'});
			started.add(perf.pid);
		}

		// V8's profile clock is CLOCK_MONOTONIC in µs, as is hrtime: the summary keeps to the load.
		const windowStart = Number(process.hrtime.bigint() / 1000n);
		result.outcome = await measuredLoad(running, {protocol: 'line', seconds, wrongShare: 0, ...spec});
		result.window = {startUs: windowStart, endUs: Number(process.hrtime.bigint() / 1000n)};
		result.cpuSplit = cpuSplit(before, perThread(running.pid), result.outcome.seconds, Math.max(1, result.outcome.done));
		if (perf) {
			await Promise.race([new Promise(resolve => perf.on('exit', resolve)), sleep(10_000)]);
			started.delete(perf.pid);
		}
	} finally {
		await running.stop();
	}

	const file = existsSync(profileDirectory) ? readdirSync(profileDirectory).find(name => name.endsWith('.cpuprofile')) : undefined;
	result.cpuProfile = file ? summariseCpuProfile(JSON.parse(readFileSync(path.join(profileDirectory, file), 'utf8')), root, result.window) : {error: 'no .cpuprofile written'};
	if (perfData && existsSync(perfData)) {
		result.perf = summarisePerf(perfData);
	}

	log(`profile, ${spec.mode} ${spec.clients} clients: ${result.outcome.rate}/s; main thread ${result.cpuSplit.mainThreadCores} cores, other daemon threads ${result.cpuSplit.otherThreadsCores}, workers ${result.cpuSplit.workersCores}`);
	return result;
}

async function profile(peer, prepared, directory) {
	const result = {
		runs: [
			await profileRun(peer, prepared, directory, {mode: 'pipelined', clients: 64, depth}),
			await profileRun(peer, prepared, directory, {mode: 'oneshot', clients: 8}),
		],
	};

	// What-ifs, each on a fresh daemon: what the request log costs, what a pool that grows for every
	// waiting check would do, V8's young generation at Node's default size (later flags win), the heap
	// V8 would size for a machine with this much memory (it grows fourfold before a full collection),
	// and V8 set to favour memory. The defaults run first and last: this machine's speed drifts by
	// 10-20 % within minutes, and the main table ran minutes earlier, so a what-if is read against
	// defaults measured beside it.
	result.variants = [];
	const defaults = [[], []];
	for (const [nodeFlags, extraArgs] of [defaults, [[], ['--log-level', 'warn']], [[], ['--eager-workers', '32']], [['--max-semi-space-size=16'], []], [['--max-old-space-size=4096'], []], [['--optimize-for-size'], []], defaults]) {
		// eslint-disable-next-line no-await-in-loop
		const variant = await peer.start({nodeFlags, extraArgs});
		try {
			// eslint-disable-next-line no-await-in-loop
			await sleep(500);
			const idleMiB = memory([variant.pid]).totalMiB;
			for (const mode of ['oneshot', 'pipelined']) {
				// Warmed up as the daemon of the main table was.
				// eslint-disable-next-line no-await-in-loop
				await warmUp(variant, 'line', mode);
			}

			// eslint-disable-next-line no-await-in-loop
			const pipelined = await measuredLoad(variant, {protocol: 'line', mode: 'pipelined', clients: 64, depth, seconds, wrongShare: 0});
			// eslint-disable-next-line no-await-in-loop
			const oneshot = await measuredLoad(variant, {protocol: 'line', mode: 'oneshot', clients: 8, seconds, wrongShare: 0});
			result.variants.push({nodeFlags, extraArgs, pipelined, oneshot, idleMiB, memoryMiB: memory([variant.pid]).totalMiB});
			log(`what-if ${[...nodeFlags, ...extraArgs].join(' ') || '(defaults)'}: idle ${idleMiB} MiB, pipelined 64 ${pipelined.rate}/s (${pipelined.cpuMsPerRequest} ms CPU), one per connection 8 ${oneshot.rate}/s (${oneshot.cpuMsPerRequest} ms CPU), ${result.variants.at(-1).memoryMiB} MiB (mismatches ${pipelined.mismatches + oneshot.mismatches})`);
		} finally {
			// eslint-disable-next-line no-await-in-loop
			await variant.stop();
		}
	}

	return result;
}

/** CPU ticks of the daemon's threads and of its workers (live ones, and reaped ones through cutime). */
function perThread(pid) {
	const threads = {};
	for (const tid of readdirSync(`/proc/${pid}/task`)) {
		try {
			const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1');
			const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
			const name = Number(tid) === pid ? 'main thread' : stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
			threads[name] = (threads[name] ?? 0) + Number(fields[11]) + Number(fields[12]);
		} catch {}
	}

	const switches = readFileSync(`/proc/${pid}/task/${pid}/status`, 'latin1');
	const voluntary = Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(switches)?.[1]);
	const involuntary = Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(switches)?.[1]);
	const table = processTable();
	const own = readFileSync(`/proc/${pid}/stat`, 'latin1');
	const fields = own.slice(own.lastIndexOf(')') + 2).split(' ');
	const live = tree(pid, table).filter(each => each !== pid).reduce((sum, each) => sum + table.get(each).ticks, 0);
	// The daemon's cutime and cstime are its reaped workers'.
	return {threads, workers: live + Number(fields[13]) + Number(fields[14]), voluntary, involuntary};
}

function cpuSplit(before, after, elapsed, requests) {
	const cores = ticks => Math.round(ticks / ticksPerSecond / elapsed * 100) / 100;
	const threads = {};
	for (const [name, ticks] of Object.entries(after.threads)) {
		threads[name] = cores(ticks - (before.threads[name] ?? 0));
	}

	return {
		mainThreadCores: threads['main thread'],
		otherThreadsCores: Math.round(Object.entries(threads).filter(([name]) => name !== 'main thread').reduce((sum, [, value]) => sum + value, 0) * 100) / 100,
		threads,
		workersCores: cores(after.workers - before.workers),
		// Context switches of the main thread per request: it blocks in epoll (voluntary), or is
		// preempted (involuntary), e.g. by a worker its pipe write has woken.
		mainVoluntarySwitchesPerRequest: Math.round((after.voluntary - before.voluntary) / requests * 100) / 100,
		mainInvoluntarySwitchesPerRequest: Math.round((after.involuntary - before.involuntary) / requests * 100) / 100,
	};
}

// --- Main ---------------------------------------------------------------------------------------
/** A file's first line, or undefined where the machine has no such file. */
function firstLine(file) {
	try {
		return readFileSync(file, 'utf8').split('\n')[0].trim();
	} catch {
		return undefined;
	}
}

/**
 * What this kind of machine charges for the things a request does: the hypervisor (under PVM a
 * guest's page-table changes go through the host, so mapping memory costs more), page-table
 * isolation (every system call switches page tables), and how long an idle CPU polls before it
 * halts (a halted CPU has to be run again by the hypervisor to take a wake-up). The same code
 * measured very differently on two kernels of this project's machine; the report says which.
 */
function virtualisation() {
	const kernelLog = spawnSync('dmesg', {encoding: 'utf8'});
	const hypervisor = /Hypervisor detected: (.*)/.exec(kernelLog.status === 0 ? kernelLog.stdout : '')?.[1]?.trim();
	const haltPoll = firstLine('/sys/module/haltpoll/parameters/guest_halt_poll_ns');
	return {
		hypervisor,
		meltdown: firstLine('/sys/devices/system/cpu/vulnerabilities/meltdown'),
		guestHaltPollNs: haltPoll === undefined ? undefined : Number(haltPoll),
	};
}

function machine() {
	return {
		date: new Date().toISOString(),
		nproc: Number(spawnSync('nproc', {encoding: 'utf8'}).stdout.trim()) || os.availableParallelism(),
		cpu: /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? os.cpus()[0]?.model ?? 'unknown CPU',
		node: process.version,
		kernel: os.release(),
		loadAverageAtStart: os.loadavg().map(value => Math.round(value * 100) / 100),
		...virtualisation(),
		privateTmp: process.env.BENCH_PRIVATE_TMP === '1',
		pamWrapperFoldersAtStart: pamWrapperFolders(),
	};
}

if (flag('--render')) {
	// Only the report again, from the JSON of a run (after a change to report.mjs): no measurement.
	const file = path.resolve(args.find(argument => argument.endsWith('.json')) ?? path.join(root, 'bench/results/latest.json'));
	const saved = JSON.parse(readFileSync(file, 'utf8'));
	saved.targets = targets(saved);
	const directoryOfFile = path.dirname(file);
	const names = saved.partial ? ['partial'] : [saved.machine.date.slice(0, 10), 'latest'];
	for (const name of names) {
		writeFileSync(path.join(directoryOfFile, `${name}.json`), `${JSON.stringify(saved, null, '\t')}\n`);
		writeFileSync(path.join(directoryOfFile, `${name}.md`), markdown(saved));
	}

	writeFileSync(path.join(directoryOfFile, saved.partial ? 'partial.svg' : 'chart.svg'), chart(saved));
	log(`rendered ${names.join(', ')} in ${path.relative(root, directoryOfFile)}`);
	process.exit(0);
}

const prepared = setup(flag('--no-setup'));
const {createPamSandbox, matrixStack} = await import(path.join(root, 'dist/sandbox.js'));
const {defaultConfig} = await import(path.join(root, 'dist/config.js'));
const {eagerWorkersFor} = await import(path.join(root, 'dist/pool.js'));
const directory = path.join(os.tmpdir(), `pam-authservice-bench-${process.pid}`);
mkdirSync(directory, {recursive: true});
workDirectory = directory;
const sandbox = createPamSandbox({
	directory,
	users: Array.from({length: users}, (_, index) => ({user: `u${index}`, password: `pw-${index}-secret`, service: 'x2gobroker'})),
	services: {
		x2gobroker: matrixStack,
		faildelay: 'auth optional ${lib}/pam_faildelay.so delay=1000000\nauth required ${matrix}\naccount required ${matrix}\n',
	},
});

const report = {machine: machine(), partial, openFilesLimit: nofile, quick, settleSeconds, warmupSeconds, rounds, only: only ? [...only] : undefined, users, seconds, depth, headOfLineSeconds: holSeconds, raisedLimits, buildError: prepared.buildError, peers: []};
try {
	if (scenarioWanted('selftest')) {
		log('load generator self-test against a server that answers at once');
		const trivialSocket = path.join(directory, 'trivial.socket');
		const trivial = spawnTracked(prepared.trivialServer, [trivialSocket], {stdio: ['ignore', 'pipe', 'inherit']});
		await serverReady(trivial, 'the trivial server');
		const base = {socket: trivialSocket, protocol: 'line', seconds, wrongShare: 0, users};
		report.loadGenerator = {};
		for (const [key, spec] of Object.entries({pipelined64: {mode: 'pipelined', clients: 64, depth}, oneshot8: {mode: 'oneshot', clients: 8}, oneshot64: {mode: 'oneshot', clients: 64}})) {
			// The trivial server says `ok` to everything: only good passwords, so that it is right.
			// eslint-disable-next-line no-await-in-loop
			report.loadGenerator[key] = await load({...base, ...spec});
			log(`load generator alone, ${key}: ${report.loadGenerator[key].rate}/s (load generator ${report.loadGenerator[key].loadCpuCores} cores)`);
		}

		await stopTree(trivial.pid);

		// The runtime's floor: bare Node.js, idle; and a Node.js server that answers at once, with
		// the daemon's Node.js flags, under the loads the daemon gets (rate, CPU, memory after).
		log('the floor of the runtime: bare Node.js, and a Node.js server that answers at once');
		const floorEnv = {...process.env, ...prepared.daemonEnvironment};
		const bare = spawnTracked(process.execPath, [...prepared.daemonNodeFlags, '-e', 'setInterval(() => {}, 1000)'], {env: floorEnv, stdio: 'ignore'});
		await sleep(1000);
		report.nodeFloor = {flags: prepared.daemonNodeFlags, environment: prepared.daemonEnvironment, bareIdle: memory([bare.pid])};
		await stopTree(bare.pid);
		const floorSocket = path.join(directory, 'node-floor.socket');
		const floor = spawnTracked(process.execPath, [...prepared.daemonNodeFlags, path.join(root, 'bench/node-floor.mjs'), floorSocket], {env: floorEnv, stdio: ['ignore', 'pipe', 'inherit']});
		await serverReady(floor, 'the Node.js floor server');
		await sleep(500);
		report.nodeFloor.idle = memory([floor.pid]);
		const floorRunning = {socket: floorSocket, pid: floor.pid};
		for (const [key, spec] of Object.entries({oneshot8: {mode: 'oneshot', clients: 8}, pipelined64: {mode: 'pipelined', clients: 64, depth}})) {
			// eslint-disable-next-line no-await-in-loop
			report.nodeFloor[key] = await measuredLoad(floorRunning, {...base, ...spec, socket: floorSocket});
			log(`Node.js floor, ${key}: ${report.nodeFloor[key].rate}/s, ${report.nodeFloor[key].cpuMsPerRequest} ms CPU a request`);
		}

		report.nodeFloor.afterLoad = memory([floor.pid]);
		log(`Node.js floor: bare ${report.nodeFloor.bareIdle.totalMiB} MiB; server idle ${report.nodeFloor.idle.totalMiB} MiB, after load ${report.nodeFloor.afterLoad.totalMiB} MiB`);
		await stopTree(floor.pid);
	}

	if (scenarioWanted('wakeup')) {
		// What a hop from one process to another costs here: it explains where the servers differ.
		// A probe that fails (a machine that will not let it pin itself to a CPU) costs only its section.
		try {
			report.wakeup = JSON.parse(execFileSync(prepared.wakeup, ['1'], {encoding: 'utf8', timeout: 30_000}));
			log(`a round trip between two processes over a Unix socket: ${report.wakeup.sameCpuUs} µs on one CPU, ${report.wakeup.acrossCpusUs} µs across two, ${report.wakeup.unpinnedUs} µs where the scheduler puts them`);
		} catch (error) {
			log(`wakeup: ${error.message}`);
		}
	}

	if (scenarioWanted('loop')) {
		report.loop = {};
		// Best of two runs each: the limit should not come out low because something else ran.
		for (const variant of ['1', '2', '1-pinned']) {
			const [threads, pinned] = variant.split('-');
			const attempts = [0, 1].map(() => JSON.parse(execFileSync(prepared.loop, ['x2gobroker', 'u5', 'pw-5-secret', String(seconds), threads, ...(pinned ? ['pin'] : [])], {env: {...process.env, ...sandbox.environment}, encoding: 'utf8', timeout: (seconds + 10) * 1000})));
			report.loop[variant] = {...attempts.reduce((best, attempt) => (attempt.rate > best.rate ? attempt : best)), attempts: attempts.map(attempt => attempt.rate)};
			log(`in-process libpam loop, ${threads} thread(s)${pinned ? ', modules kept loaded' : ''}: ${report.loop[variant].attempts.join(', ')}/s`);
		}
	}

	const definitions = peerDefinitions(sandbox, prepared, directory, eagerWorkersFor(defaultConfig()));
	if (['throughput', 'head-of-line', 'idle-flood'].some(scenarioWanted)) {
		const entries = Object.entries(definitions).filter(([name]) => peerWanted(name)).map(([name, peer]) => peerEntry(name, peer));
		report.interleaved = true;
		await measureSideBySide(entries);
		for (const entry of entries.filter(each => !each.result.error && !each.peer.reference)) {
			try {
				// eslint-disable-next-line no-await-in-loop
				await measureAlone(entry);
			} catch (error) {
				log(`${entry.name}: ${error.stack}`);
				entry.result.error = error.message;
			}
		}

		for (const {name, result} of entries) {
			if (name === 'pam-authservice') {
				result.logWarnings = logWarnings(result.logFile);
			}

			delete result.logFile;
			if (definitions[name].reference) {
				report.designFloor = result;
			} else {
				report.peers.push(result);
			}
		}
	}

	if (scenarioWanted('profile') && peerWanted('pam-authservice')) {
		log('profiling pam-authservice (node --cpu-prof) during pipelined load, 64 clients');
		try {
			report.profile = await profile(definitions['pam-authservice'], prepared, directory);
		} catch (error) {
			log(`profile: ${error.stack}`);
			report.profile = {error: error.message};
		}
	}
} finally {
	killAll();
	rmSync(directory, {recursive: true, force: true});
}

report.targets = targets(report);
report.finished = new Date().toISOString();
const text = markdown(report);
mkdirSync(results, {recursive: true});
const stamp = report.machine.date.slice(0, 10);
const json = `${JSON.stringify(report, null, '\t')}\n`;
for (const name of partial ? ['partial'] : [stamp, 'latest']) {
	writeFileSync(path.join(results, `${name}.json`), json);
	writeFileSync(path.join(results, `${name}.md`), text);
}

writeFileSync(path.join(results, partial ? 'partial.svg' : 'chart.svg'), chart(report));
process.stdout.write(text);
log(`results in ${path.relative(root, results)}/${partial ? 'partial' : `{${stamp},latest}`}.{md,json} and ${partial ? 'partial' : 'chart'}.svg`);
process.exit(0);
