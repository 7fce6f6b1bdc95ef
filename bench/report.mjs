// The benchmark's report: the targets of issue 5 checked against one run, the Markdown tables and
// a hand-written SVG chart (no dependency).

const ours = 'pam-authservice';
const peerOrder = ['pam-authservice', 'x2gobroker-authservice', 'saslauthd'];

/** How a Node.js program was run, for the report: `NAME=VALUE node FLAGS`. */
export function launchText(environment = {}, flags = []) {
	return [...Object.entries(environment).map(([name, value]) => `${name}=${value}`), 'node', ...flags].join(' ');
}

export function number(value) {
	if (value === undefined || value === null || Number.isNaN(value)) {
		return '–';
	}

	return Math.round(value).toLocaleString('en-US').replaceAll(',', '\u202F');
}

function ms(value) {
	if (value === undefined || value === null) {
		return '–';
	}

	return value >= 100 ? `${number(value)} ms` : `${value.toFixed(value >= 10 ? 1 : 2)} ms`;
}

function peer(report, name) {
	return report.peers.find(entry => entry.name === name && !entry.error);
}

function runs(entry, mode, clients, wrongShare = 0) {
	return entry?.runs?.filter(each => each.mode === mode && each.clients === clients && each.wrongShare === wrongShare) ?? [];
}

/** The run of a case; of a case run in several rounds, the one with the median rate. */
export function run(entry, mode, clients, wrongShare = 0) {
	const all = runs(entry, mode, clients, wrongShare).sort((a, b) => a.rate - b.rate);
	return all[Math.floor((all.length - 1) / 2)];
}

/** CPU per request over every run of a case: the CPU of all its rounds over all their requests. */
function cpuMsPerRequest(entry, mode, clients) {
	const all = runs(entry, mode, clients);
	const requests = all.reduce((sum, each) => sum + each.done, 0);
	return Math.round(all.reduce((sum, each) => sum + each.cpuMsPerRequest * each.done, 0) / requests * 1000) / 1000;
}

function median(values) {
	const sorted = [...values].sort((a, b) => a - b);
	const middle = Math.floor(sorted.length / 2);
	return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** A program's load outcomes in the run: warm-ups, throughput runs, head-of-line loads. */
function outcomesOf(entry) {
	return [...entry.warmup ?? [], ...entry.runs ?? [], entry.headOfLine?.good, entry.headOfLine?.attack].filter(Boolean);
}

/** The answers checked in `outcomes`, the wrong ones counted. */
function tally(outcomes) {
	return outcomes.reduce(({checked, wrong}, outcome) => ({checked: checked + outcome.done, wrong: wrong + outcome.mismatches}), {checked: 0, wrong: 0});
}

/** Every answer checked in the run (the programs compared and the profile's loads), the wrong ones counted. */
function mismatchTotal(report) {
	const profiled = [...(report.profile?.runs ?? []).map(each => each.outcome), ...(report.profile?.variants ?? []).flatMap(variant => [variant.pipelined, variant.oneshot])];
	return tally([...report.peers.flatMap(outcomesOf), ...profiled.filter(Boolean)]);
}

/**
For the cases taken in rounds (the peers in turns): `value` of each of `entry`'s runs against the
same round's run of `other`, seconds apart. Empty when the case did not run in rounds.
*/
function roundByRound(entry, other, clients, value) {
	const theirRuns = runs(other, 'oneshot', clients);
	return runs(entry, 'oneshot', clients).filter(each => each.round).map(each => value(each) / value(theirRuns.find(their => their.round === each.round)));
}

/** `round by round 1.02×, 1.06×: median 1.04×`, `of` after the ratios. */
function roundByRoundText(ratios, of = '') {
	return `round by round ${ratios.map(value => `${value.toFixed(2)}×`).join(', ')}${of}: median ${median(ratios).toFixed(2)}×`;
}

export function targets(report) {
	const mine = peer(report, ours);
	const sasl = peer(report, 'saslauthd');
	const list = [];
	const check = (label, measure) => {
		try {
			const {pass, measured} = measure();
			list.push({label, pass: pass === undefined ? null : Boolean(pass), measured});
		} catch {
			list.push({label, pass: null, measured: 'not measured in this run'});
		}
	};

	check('pipelined, 64 clients: ≥ 0.9× the single-thread in-process loop', () => {
		const rate = run(mine, 'pipelined', 64).rate;
		const loop = report.loop[1].rate;
		return {pass: rate >= 0.9 * loop, measured: `${number(rate)} /s = ${(rate / loop).toFixed(2)}× the loop's ${number(loop)} /s`};
	});
	for (const clients of [8, 64]) {
		check(`one request per connection, ${clients} clients: ≥ 1.1× saslauthd`, () => {
			const rate = run(mine, 'oneshot', clients).rate;
			const theirs = run(sasl, 'oneshot', clients).rate;
			const roundRatios = entry => roundByRound(entry, sasl, clients, each => each.rate);
			const ratios = roundRatios(mine);
			// How far the design itself goes, in the same runs: the relay floor, where it ran.
			const relay = report.designFloor && !report.designFloor.error && run(report.designFloor, 'oneshot', clients);
			const floor = relay ? `; the design's floor (bench/relay-floor.mjs): ${number(relay.rate)} /s, ${(ratios.length > 1 ? median(roundRatios(report.designFloor)) : relay.rate / theirs).toFixed(2)}×` : '';
			if (ratios.length > 1) {
				const ratio = median(ratios);
				return {pass: ratio >= 1.1, measured: `${number(rate)} /s vs saslauthd's ${number(theirs)} /s (medians of ${ratios.length} runs); ${roundByRoundText(ratios)}${floor}`};
			}

			return {pass: rate >= 1.1 * theirs, measured: `${number(rate)} /s = ${(rate / theirs).toFixed(2)}× saslauthd's ${number(theirs)} /s${floor}`};
		});
	}

	check('one request per connection, 1 client: median latency ≤ saslauthd\'s', () => {
		const mineMs = run(mine, 'oneshot', 1).p50Ms;
		const theirs = run(sasl, 'oneshot', 1).p50Ms;
		// As for the rates: each round's pair of runs, seconds apart, not two runs picked apart.
		const ratios = roundByRound(mine, sasl, 1, each => each.p50Ms);
		if (ratios.length > 1) {
			const ratio = median(ratios);
			return {pass: ratio <= 1, measured: `${ms(mineMs)} vs ${ms(theirs)} (the median-rate runs); ${roundByRoundText(ratios, ' saslauthd\'s')}`};
		}

		return {pass: mineMs <= theirs, measured: `${ms(mineMs)} vs ${ms(theirs)}`};
	});
	check('head-of-line: good login p99 ≤ 10 ms (all answered)', () => {
		const {good} = mine.headOfLine;
		return {pass: good.p99Ms <= 10 && good.errors === 0 && good.done > 0, measured: `p99 ${ms(good.p99Ms)} over ${number(good.done)} logins, ${good.errors} unanswered`};
	});
	for (const count of [1100, 10_000]) {
		check(`idle flood, ${number(count)} connections: good login ≤ 20 ms (worst of 5), daemon alive`, () => {
			const flood = mine.idleFlood[count];
			return {
				pass: flood.opened.open === count && flood.worstLoginMs !== null && flood.worstLoginMs <= 20 && flood.alive && flood.servesAfterwards,
				measured: `${number(flood.opened.open)} held open; logins ${flood.loginsMs.map(value => (value === null ? 'none' : value.toFixed(2))).join(', ')} ms; alive ${flood.alive}`,
			};
		});
	}

	check('CPU per request (daemon and workers; one per connection, 8 clients) ≤ saslauthd\'s', () => {
		const mineMs = cpuMsPerRequest(mine, 'oneshot', 8);
		const theirs = cpuMsPerRequest(sasl, 'oneshot', 8);
		const rounds = runs(mine, 'oneshot', 8).length;
		return {pass: mineMs <= theirs, measured: `${mineMs} ms vs ${theirs} ms${rounds > 1 ? ` (all ${rounds} rounds: CPU over requests)` : ''}`};
	});
	// Beside each memory figure, what the runtime alone holds with the same workers: how close the
	// design can come (the floor server is measured in the same run, under the same loads).
	const memoryMeasured = (memory, floor) => {
		const workersMiB = Math.round(memory.processes.filter(entry => entry.comm !== 'node').reduce((sum, entry) => sum + entry.rssMiB, 0) * 10) / 10;
		const floorText = floor ? `; the Node.js floor server with the same workers: ${floor.totalMiB} + ${workersMiB} = ${Math.round((floor.totalMiB + workersMiB) * 10) / 10} MiB` : '';
		return `${memory.totalMiB} MiB, ${memory.processes.length} processes${splitText(memory)}${floorText}`;
	};

	check('memory idle ≤ 45 MiB (daemon and workers)', () => ({pass: mine.memoryIdle.totalMiB <= 45, measured: memoryMeasured(mine.memoryIdle, report.nodeFloor?.idle)}));
	check('memory after load ≤ 80 MiB (daemon and workers)', () => ({pass: mine.memoryAfterLoad.totalMiB <= 80, measured: memoryMeasured(mine.memoryAfterLoad, report.nodeFloor?.afterLoad)}));
	check('every answer right (good → ok, wrong → fail), all peers and runs', () => {
		const {checked, wrong} = mismatchTotal(report);
		return {pass: wrong === 0 && checked > 0, measured: `${number(wrong)} wrong of ${number(checked)} checked`};
	});
	for (const [mode, key] of [['pipelined', 'pipelined64'], ['oneshot', 'oneshot64']]) {
		check(`load generator not the bottleneck, ${mode === 'oneshot' ? 'one per connection' : 'pipelined'}: alone ≥ 3× the best rate measured`, () => {
			const alone = report.loadGenerator[key].rate;
			const best = Math.max(...report.peers.flatMap(entry => (entry.runs ?? []).filter(each => each.mode === mode).map(each => each.rate)));
			return {pass: alone >= 3 * best, measured: `${number(alone)} /s = ${(alone / best).toFixed(1)}× the best, ${number(best)} /s`};
		});
	}

	return list;
}

function cell(outcome) {
	if (!outcome) {
		return '–';
	}

	const notes = [];
	if (outcome.errors > 0) {
		notes.push(`${number(outcome.errors)} unanswered/errors: ${Object.entries(outcome.errorKinds).map(([kind, count]) => `${kind} ×${count}`).join(', ')}`);
	}

	if (outcome.mismatches > 0) {
		notes.push(`**${number(outcome.mismatches)} WRONG ANSWERS**`);
	}

	return `${number(outcome.rate)} /s · p50 ${ms(outcome.p50Ms)} · p99 ${ms(outcome.p99Ms)}${notes.length > 0 ? ` (${notes.join('; ')})` : ''}`;
}

/** How much of a resident figure is the processes' own memory, for runs that recorded it. */
function splitText(memory) {
	return memory.anonMiB === undefined ? '' : ` (${memory.anonMiB} MiB their own, anonymous; ${memory.fileMiB} MiB pages of executables and libraries, shared)`;
}

function memoryCell(memory) {
	if (!memory) {
		return '–';
	}

	const counts = new Map();
	for (const entry of memory.processes) {
		const value = counts.get(entry.comm) ?? {count: 0, mib: 0};
		counts.set(entry.comm, {count: value.count + 1, mib: value.mib + entry.rssMiB});
	}

	const own = memory.anonMiB === undefined ? '' : `; anonymous ${memory.anonMiB}`;
	return `${memory.totalMiB} MiB (${[...counts].map(([comm, {count, mib}]) => `${count > 1 ? `${count}× ` : ''}${comm} ${(mib / count).toFixed(1)}`).join(' + ')}${own})`;
}

export function markdown(report) {
	const {machine} = report;
	const peers = peerOrder.map(name => report.peers.find(entry => entry.name === name)).filter(Boolean);
	const valid = peers.filter(entry => !entry.error);
	const repeated = [1, 8, 64].filter(clients => valid.some(entry => runs(entry, 'oneshot', clients).length > 1));
	const lines = [];
	const push = (...more) => lines.push(...more);
	push(`# pam-authservice benchmark, ${machine.date.slice(0, 10)}${report.partial ? ' (partial run: --quick/--only)' : ''}`, '');
	const virtual = [
		machine.hypervisor && `hypervisor ${machine.hypervisor}`,
		machine.meltdown && `Meltdown: ${machine.meltdown}`,
		machine.guestHaltPollNs !== undefined && `idle CPUs poll ${number(machine.guestHaltPollNs / 1000)} µs before they halt`,
	].filter(Boolean);
	push(`${machine.nproc} cores (${machine.cpu}), Node ${machine.node}, Linux ${machine.kernel}${virtual.length > 0 ? ` (${virtual.join('; ')})` : ''}; load average at start ${machine.loadAverageAtStart.join(' ')}.`);
	push(`One PAM stack for every program: pam_wrapper + pam_matrix, ${number(report.users)} users (service \`x2gobroker\`: auth and account by pam_matrix). ${report.seconds} s a throughput run, after ${report.warmupSeconds ?? 0} s of unmeasured load in each mode (a JIT compiles, pools and pre-forked servers start their processes: every program gets the same); pipelined runs keep ${report.depth} requests in flight per connection.${report.interleaved ? ' The programs take turns: every case (mode, clients, wrong passwords) runs on each program before the next case, so that two programs are compared on runs seconds apart (this machine\'s speed drifts by 10–20 % within minutes).' : ''}${repeated.length > 0 ? ` The cases with a target against saslauthd (one per connection, ${repeated.join(', ').replace(/, (?=\d+$)/, ' and ')} clients, good passwords) run ${report.rounds} times each, in turns; the tables show the run with the median rate.` : ''} Every answer is checked (good password → ok, wrong → fail).`);
	if (report.buildError) {
		push(`**${report.buildError}.**`);
	}

	push(`pam-authservice runs with these limits raised (the load generator is a single uid that sends thousands of failures a second and holds 10 000 connections): \`${report.raisedLimits.join(' ')}\`. All programs run under the same open-files limit, ${number(report.openFilesLimit)} (prlimit). ${machine.privateTmp ? 'The run had its own /tmp (a mount namespace): pam_wrapper keeps one folder per process there, /tmp/pam.X with one character, and other test runs on the machine would otherwise use up the names.' : '**The run shared /tmp with the rest of the machine: other processes on pam_wrapper may have used up its folder names (/tmp/pam.X, about 60), and a worker that finds none fails its check.**'}`, '');

	push('## Targets (issue 5)', '', '| target | measured | |', '|---|---|---|');
	for (const target of report.targets) {
		push(`| ${target.label} | ${target.measured} | ${target.pass === null ? 'not measured' : (target.pass ? 'pass' : '**not met**')} |`);
	}

	push('', '## Throughput and latency', '', 'Requests per second, median and 99th-percentile latency. One per connection: connect, send, read the answer, close (as x2gobroker\'s own client asks).', '');
	push(`| mode | clients | wrong passwords | ${peers.map(entry => entry.name).join(' | ')} |`, `|---|---|---|${peers.map(() => '---').join('|')}|`);
	for (const mode of ['oneshot', 'pipelined']) {
		for (const wrongShare of [0, 0.5]) {
			for (const clients of [1, 8, 64]) {
				push(`| ${mode === 'oneshot' ? 'one per connection' : 'pipelined'} | ${clients} | ${wrongShare * 100} % | ${peers.map(entry => (entry.error ? 'failed' : (mode === 'pipelined' && entry.protocol === 'sasl' ? 'n/a (one request per connection)' : cell(run(entry, mode, clients, wrongShare))))).join(' | ')} |`);
			}
		}
	}

	if (report.loop) {
		push('', `The limit, \`pam_start\` … \`pam_authenticate\` … \`pam_acct_mgmt\` … \`pam_end\` looped in-process (bench/pam-loop.c), same stack, best of two runs: **${number(report.loop[1]?.rate)} /s** on 1 thread, **${number(report.loop[2]?.rate)} /s** on 2 threads. With one more PAM handle held open, so that \`pam_end\` does not unload the modules and \`pam_start\` does not load them again: **${number(report.loop['1-pinned']?.rate)} /s** on 1 thread. (Two threads gain more than a second core's worth because each keeps the modules loaded for the other part of the time.)`);
	}

	push('', '## Other scenarios', '', `| | ${valid.map(entry => entry.name).join(' | ')} |`, `|---|${valid.map(() => '---').join('|')}|`);
	const row = (label, pick) => {
		push(`| ${label} | ${valid.map(entry => {
			try {
				return pick(entry) ?? '–';
			} catch {
				return '–';
			}
		}).join(' | ')} |`);
	};

	row(`good logins (1 client, ${report.headOfLineSeconds} s) while 20 clients send wrong passwords to a stack with a 1 s fail delay`, entry => {
		const {good, attack} = entry.headOfLine;
		return good.done > 0
			? `p50 ${ms(good.p50Ms)}, p99 ${ms(good.p99Ms)}, max ${ms(good.maxMs)} (${number(good.done)} answered${good.errors > 0 ? `, ${good.errors} not within 8 s` : ''}; ${number(attack.done)} attack answers)`
			: `none answered within 8 s (${number(attack.done)} attack answers)`;
	});
	for (const count of [1100, 10_000]) {
		row(`${number(count)} idle connections, then 5 good logins`, entry => {
			const flood = entry.idleFlood[count];
			const held = `${number(flood.opened.open)} held${flood.opened.failed > 0 ? `, ${number(flood.opened.failed)} not connected (${Object.entries(flood.opened.failures).map(([kind, count]) => `${kind === 'EAGAIN' ? 'backlog full for 8 s' : kind} ×${number(count)}`).join(', ')})` : ''}${flood.stillOpenAtEnd < flood.opened.open ? `, ${number(flood.opened.open - flood.stillOpenAtEnd)} closed by the peer` : ''}`;
			const logins = flood.loginsMs.every(value => value === null) ? 'no answer' : `first ${ms(flood.firstLoginMs)}, worst ${flood.worstLoginMs === null ? 'no answer' : ms(flood.worstLoginMs)}`;
			return `${logins}; ${held}; ${flood.alive ? 'alive' : `**dead**${flood.lastWords ? ` (its last words: \`${flood.lastWords.replaceAll('|', '\\|')}\`)` : ''}`}${flood.alive && !flood.servesAfterwards ? ', not serving afterwards' : ''}`;
		});
	}

	row('CPU per request, daemon and workers (one per connection, 8 clients, good)', entry => `${cpuMsPerRequest(entry, 'oneshot', 8)} ms`);
	row('CPU per request (pipelined, 64 clients, good)', entry => (entry.protocol === 'sasl' ? 'n/a' : `${run(entry, 'pipelined', 64).cpuMsPerRequest} ms`));
	row('resident memory idle', entry => memoryCell(entry.memoryIdle));
	row(report.interleaved ? 'resident memory after its throughput runs' : 'resident memory after the throughput runs', entry => memoryCell(entry.memoryAfterLoad));
	if (valid.some(entry => entry.memorySettled)) {
		row(report.interleaved ? `resident memory ${report.settleSeconds} s after the last throughput run, idle` : `resident memory ${report.settleSeconds ?? 15} s later, idle`, entry => memoryCell(entry.memorySettled));
	}

	row('time from start to serving (median of the starts)', entry => `${ms(median(entry.startMs))} (${entry.startMs.length} starts)`);

	if (report.loadGenerator) {
		const lg = report.loadGenerator;
		push('', '## The load generator alone', '', `Against a server that answers \`ok\` at once and costs next to nothing (bench/trivial-server.c, epoll): pipelined, 64 clients: ${number(lg.pipelined64.rate)} /s; one per connection: ${number(lg.oneshot8.rate)} /s with 8 clients, ${number(lg.oneshot64.rate)} /s with 64. The load generator is one process: bench/oneshot-load.c (C, epoll) for one request per connection, where a Node.js client connection cost 40 µs of CPU, and bench/load.mjs (Node.js) for pipelined requests. It shares the cores with the program measured: its CPU use is in the JSON (\`loadCpuCores\`) for every run.`);
	}

	if (report.nodeFloor?.afterLoad) {
		const floor = report.nodeFloor;
		const launch = launchText(floor.environment, floor.flags);
		const flags = launch !== 'node' ? ` (\`${launch}\`, as the daemon runs)` : '';
		push('', '## The floor of the runtime', '', `What any Node.js daemon of this shape starts from${flags}: bare Node.js waiting on a timer holds ${floor.bareIdle.totalMiB} MiB${floor.bareIdle.fileMiB === undefined ? '' : `, ${floor.bareIdle.fileMiB} MiB of it pages of the \`node\` executable and its libraries`}. A Node.js server that answers \`ok\` to every line at once (bench/node-floor.mjs: no PAM, no log, no limits) holds ${floor.idle.totalMiB} MiB idle${splitText(floor.idle)} and ${floor.afterLoad.totalMiB} MiB after these loads: one request per connection, 8 clients, ${number(floor.oneshot8.rate)} /s at ${floor.oneshot8.cpuMsPerRequest} ms CPU a request; pipelined, 64 clients, ${number(floor.pipelined64.rate)} /s at ${floor.pipelined64.cpuMsPerRequest} ms CPU a request. Most of a Node.js process's resident memory is the pages of the \`node\` executable itself (shared, read from the file), and a garbage-collected heap grows under load before it is collected.`);
	}

	const relay = report.designFloor;
	if (relay?.runs?.length > 0 && !relay.error) {
		const mine = peer(report, ours);
		const sasl = peer(report, 'saslauthd');
		const cases = clientCounts => clientCounts.map(clients => {
			const theirs = run(sasl, 'oneshot', clients);
			const ourRun = run(mine, 'oneshot', clients);
			// A partial run (`--only`) may leave a peer out: say only what was measured.
			const beside = [ourRun && `pam-authservice ${number(ourRun.rate)} /s at ${cpuMsPerRequest(mine, 'oneshot', clients)} ms`, theirs && `saslauthd ${number(theirs.rate)} /s`].filter(Boolean);
			return `${clients} ${clients === 1 ? 'client' : 'clients'}: ${number(run(relay, 'oneshot', clients).rate)} /s at ${cpuMsPerRequest(relay, 'oneshot', clients)} ms CPU a request${beside.length > 0 ? ` (${beside.join('; ')})` : ''}`;
		});
		const answered = tally(outcomesOf(relay));
		push('', '## The floor of the design', '', `The least a Node.js daemon that hands every check to PAM worker processes can do: bench/relay-floor.mjs relays each request line to this project's own C workers (the same program and frames; as many as the daemon starts under load, two a core) and answers by their result, with no log, no limits, no throttle and no time-outs, under the daemon's Node.js flags. It took its turns with the programs above in the cases compared with saslauthd (one request per connection, good passwords), medians of the rounds: ${cases([1, 8, 64]).join('; ')}. The gap between it and pam-authservice is what the daemon's own work for a request costs (its log line, the throttle, the caller's credentials, limits and time-outs); the gap between it and saslauthd is what the design allows. Memory: ${relay.memoryIdle?.totalMiB} MiB idle, ${relay.memoryAfterLoad?.totalMiB} MiB after its runs (fewer than the others': one per connection, good passwords only), workers included. ${number(answered.wrong)} wrong of ${number(answered.checked)} answers.`);
	}

	if (report.wakeup) {
		const {sameCpuUs, acrossCpusUs, unpinnedUs} = report.wakeup;
		push('', '## Waking a process on this machine', '', `One byte there and back between two processes over a Unix socket (bench/wakeup.c): ${sameCpuUs} µs with both on one CPU${acrossCpusUs === null ? '' : `, ${acrossCpusUs} µs with each on a CPU of its own`}, ${unpinnedUs} µs where the scheduler puts them. Across CPUs the one that waits has usually let its CPU go idle, and waking an idle CPU is the cost: on a virtual machine whose idle CPUs halt, the hypervisor has to run that CPU again${machine.guestHaltPollNs > 0 ? ` (here an idle CPU first polls for ${number(machine.guestHaltPollNs / 1000)} µs, and a wake-up within that time finds it running; both cases are in the time across CPUs)` : ''}. A request pays it at each hop from one process to another whose CPU has gone idle, as it mostly has with a single client: saslauthd's requests make two hops (client → saslauthd → client), pam-authservice's four (client → daemon → PAM worker → daemon → client). With many clients the CPUs are seldom idle, and the hops cost little.`);
	}

	const noisy = valid.flatMap(entry => (entry.runs ?? []).map(each => ({entry, each}))).filter(({each}) => each.otherCpuCores > 0.25);
	if (noisy.length > 0) {
		push('', `Note: during ${noisy.length} run(s) other processes on the machine used more than a quarter of a core (up to ${Math.max(...noisy.map(({each}) => each.otherCpuCores))} cores): those numbers are lower than they would be on a quiet machine.`);
	}

	if (report.profile && !report.profile.error) {
		push('', '## Where pam-authservice spends its time', '');
		push('`node --cpu-prof` on the daemon (a fresh one for each load), with `perf record -e cpu-clock -a` of the whole machine alongside when there is perf. V8 samples wall-clock time: a main thread preempted inside a system call (a write to a worker\'s pipe wakes the worker, which may take the core at once) counts as busy in that call, so the CPU figures from /proc are the ones to trust for how much CPU each part uses.');
		for (const profiled of report.profile.runs ?? []) {
			const {load, outcome, cpuSplit: split, cpuProfile, perf} = profiled;
			const title = load.mode === 'pipelined' ? `pipelined, ${load.clients} clients` : `one request per connection, ${load.clients} clients`;
			push('', `### ${title}: ${number(outcome.rate)} /s`, '');
			push(`CPU (from /proc): daemon main thread **${split.mainThreadCores} cores**, its other threads ${split.otherThreadsCores} (${Object.entries(split.threads).filter(([name]) => name !== 'main thread').map(([name, cores]) => `${name} ${cores}`).join(', ')}), PAM workers **${split.workersCores} cores**, load generator ${outcome.loadCpuCores}; ${outcome.cpuMsPerRequest} ms of daemon and worker CPU per request. The main thread blocked in epoll ${split.mainVoluntarySwitchesPerRequest} times per request and was preempted ${split.mainInvoluntarySwitchesPerRequest} times per request; the profile (${cpuProfile.onlyTheLoad ? 'samples of the load only' : 'whole run, start-up included'}) has it busy ${cpuProfile.busyShare} % of the wall time.`, '');
			if (cpuProfile.error) {
				push(`No profile: ${cpuProfile.error}`);
				continue;
			}

			push('| part (self time) | ms | % of busy |', '|---|---|---|');
			for (const entry of cpuProfile.byPart.slice(0, 10)) {
				push(`| ${entry.name} | ${entry.ms} | ${entry.percentOfBusy} |`);
			}

			push('', '| function (self time) | ms | % of busy |', '|---|---|---|');
			for (const entry of cpuProfile.topSelf.slice(0, 15)) {
				push(`| \`${entry.name}\` | ${entry.ms} | ${entry.percentOfBusy} |`);
			}

			push('', '| this project\'s function (inclusive: self and callees) | ms | % of busy |', '|---|---|---|');
			for (const entry of cpuProfile.topInclusiveProject.slice(0, 8)) {
				push(`| \`${entry.name}\` | ${entry.ms} | ${entry.percentOfBusy} |`);
			}

			if (perf) {
				push('', 'perf, whole machine, by process and library:', '', '```', ...perf.byProcessAndLibrary.slice(0, 12), '```', '', 'perf, hottest symbols:', '', '```', ...perf.bySymbol.slice(0, 20), '```');
			}
		}

		if (report.profile.variants?.length > 0) {
			const mine = peer(report, ours);
			const flagsOf = variant => [...variant.nodeFlags.map(each => `node ${each}`), ...variant.extraArgs].join(' ');
			const fresh = report.profile.variants.filter(variant => flagsOf(variant) === '');
			const how = fresh.length > 0 ? 'same loads, same run; the defaults run first and last, so that each flag is read against defaults measured minutes, not a quarter of an hour, apart' : 'same loads, same run';
			push('', '### What-ifs', '', `Each on a fresh daemon with these flags added, ${how}:`, '', '| flags | pipelined, 64 clients | one per connection, 8 clients | memory idle / after |', '|---|---|---|---|');
			const baseline = [run(mine, 'pipelined', 64), run(mine, 'oneshot', 8)];
			// Reports from before the defaults ran among the what-ifs compare with the main table.
			if (fresh.length === 0 && baseline[0] && baseline[1]) {
				push(`| (none: the defaults, from the table above) | ${number(baseline[0].rate)} /s, ${baseline[0].cpuMsPerRequest} ms CPU | ${number(baseline[1].rate)} /s, ${baseline[1].cpuMsPerRequest} ms CPU | ${mine.memoryIdle?.totalMiB ?? '–'} / ${mine.memoryAfterLoad?.totalMiB ?? '–'} MiB |`);
			}

			report.profile.variants.forEach((variant, index) => {
				const flags = flagsOf(variant);
				const label = flags ? `\`${flags}\`` : `(none: the defaults, ${index === 0 ? 'first' : 'again, last'})`;
				push(`| ${label} | ${number(variant.pipelined.rate)} /s, ${variant.pipelined.cpuMsPerRequest} ms CPU | ${number(variant.oneshot.rate)} /s, ${variant.oneshot.cpuMsPerRequest} ms CPU | ${variant.idleMiB} / ${variant.memoryMiB} MiB |`);
			});
		}
	}

	push('', '## The programs', '');
	for (const entry of peers) {
		const warnings = entry.logWarnings?.count > 0 ? ` Its log had ${number(entry.logWarnings.count)} warnings or errors: ${Object.entries(entry.logWarnings.messages).slice(0, 4).map(([message, count]) => `${message} ×${count}`).join('; ')}.` : (entry.logWarnings ? ' Its log had no warnings or errors.' : '');
		push(`- **${entry.name}**: ${entry.note ?? ''}${entry.sanity ? ` Sanity check: ${entry.sanity.detail}.` : ''}${warnings}${entry.error ? ` **Failed: ${entry.error}**` : ''}`);
	}

	push('- Connects refused with EAGAIN (a full listen backlog: x2gobroker-authservice listens with a backlog of 1) are retried after 1, 2, then every 4 ms, where a blocking client would sleep in connect(); the latency counts from the first attempt. Counts in the JSON (`connectRetries`).');
	push('', `![chart](${report.partial ? 'partial.svg' : 'chart.svg'})`, '');
	return lines.join('\n');
}

// --- Chart --------------------------------------------------------------------------------------
function escape(text) {
	return String(text).replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
}

function logTicks(min, max) {
	const ticks = [];
	for (let decade = 10 ** Math.floor(Math.log10(min)); decade <= max * 1.0001; decade *= 10) {
		for (const step of [1, 3]) {
			const value = decade * step;
			if (value >= min * 0.9999 && value <= max * 1.0001) {
				ticks.push(value);
			}
		}
	}

	return ticks;
}

function tickLabel(value) {
	return value >= 1000 ? `${value / 1000}k` : String(value);
}

export function chart(report) {
	const width = 1000;
	const colours = {'pam-authservice': '#1565c0', 'x2gobroker-authservice': '#e65100', saslauthd: '#2e7d32', loop: '#616161'};
	const clients = [1, 8, 64];
	const series = [];
	for (const entry of report.peers.filter(each => each.runs)) {
		for (const mode of ['pipelined', 'oneshot']) {
			const values = clients.map(count => run(entry, mode, count)?.rate);
			if (values.every(value => value > 0)) {
				series.push({name: `${entry.name}, ${mode === 'oneshot' ? 'one request per connection' : 'pipelined'}`, colour: colours[entry.name], dash: mode === 'oneshot' ? '6 4' : '', values});
			}
		}
	}

	for (const [variant, name, dash] of [['1', 'in-process loop, 1 thread (the limit)', '2 3'], ['2', 'in-process loop, 2 threads', '9 3 2 3'], ['1-pinned', 'in-process loop, 1 thread, modules kept loaded', '1 5']]) {
		if (report.loop?.[variant]) {
			series.push({name, colour: variant === '1-pinned' ? '#a0a0a0' : colours.loop, dash, values: clients.map(() => report.loop[variant].rate)});
		}
	}

	const all = series.flatMap(entry => entry.values).filter(value => value > 0);
	const min = 10 ** Math.floor(Math.log10(Math.min(100, ...all)));
	const max = 10 ** Math.ceil(Math.log10(Math.max(1000, ...all)));
	// Throughput panel.
	const left = 80;
	const right = 560;
	const top = 60;
	const bottom = 300;
	const x = index => left + 30 + (index * (right - left - 60) / (clients.length - 1));
	const y = value => bottom - ((Math.log10(value) - Math.log10(min)) / (Math.log10(max) - Math.log10(min)) * (bottom - top));
	const parts = [
		`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="560" viewBox="0 0 ${width} 560" font-family="sans-serif" font-size="12">`,
		`<rect width="${width}" height="560" fill="white"/>`,
		`<text x="${left}" y="24" font-size="16" font-weight="bold">pam-authservice benchmark: checks per second against concurrent clients</text>`,
		`<text x="${left}" y="42" fill="#444">Good passwords; pam_wrapper + pam_matrix, ${number(report.users)} users, the same stack for all; log scale</text>`,
		...logTicks(min, max).map(value => `<line x1="${left}" y1="${y(value).toFixed(1)}" x2="${right}" y2="${y(value).toFixed(1)}" stroke="#e0e0e0"/><text x="${left - 8}" y="${(y(value) + 4).toFixed(1)}" text-anchor="end">${tickLabel(value)}</text>`),
		`<line x1="${left}" y1="${bottom}" x2="${right}" y2="${bottom}" stroke="black"/><line x1="${left}" y1="${top}" x2="${left}" y2="${bottom}" stroke="black"/>`,
		`<text x="${left - 55}" y="${(top + bottom) / 2}" transform="rotate(-90 ${left - 55} ${(top + bottom) / 2})" text-anchor="middle">requests / s</text>`,
		...clients.map((count, index) => `<text x="${x(index)}" y="${bottom + 18}" text-anchor="middle">${count} client${count > 1 ? 's' : ''}</text>`),
	];
	for (const [index, entry] of series.entries()) {
		const points = entry.values.map((value, point) => `${x(point).toFixed(1)},${y(value).toFixed(1)}`).join(' ');
		parts.push(`<polyline fill="none" stroke="${entry.colour}" stroke-width="2.5" stroke-dasharray="${entry.dash}" points="${points}"/>`);
		parts.push(...entry.values.map((value, point) => `<circle cx="${x(point).toFixed(1)}" cy="${y(value).toFixed(1)}" r="3.5" fill="${entry.colour}"><title>${escape(entry.name)}: ${number(value)} /s</title></circle>`));
		const legendY = top + 10 + (index * 22);
		parts.push(`<line x1="${right + 30}" y1="${legendY - 4}" x2="${right + 70}" y2="${legendY - 4}" stroke="${entry.colour}" stroke-width="2.5" stroke-dasharray="${entry.dash}"/><text x="${right + 78}" y="${legendY}">${escape(entry.name)}</text>`);
	}

	// Head-of-line panel: p50 and p99 of the good login, log scale from 0.1 ms to 10 s.
	const hTop = 370;
	const hLeft = 240;
	const hRight = 760;
	const hx = value => hLeft + ((Math.log10(Math.min(Math.max(value, 0.1), 10_000)) + 1) / 5 * (hRight - hLeft));
	parts.push(`<text x="${left}" y="${hTop - 18}" font-size="14" font-weight="bold">Head-of-line: a good login while 20 clients send wrong passwords to a stack with a 1 s fail delay (log scale)</text>`);
	const holPeers = report.peers.filter(entry => entry.headOfLine);
	const rowHeight = 30;
	const hBottom = hTop + (Math.max(1, holPeers.length) * rowHeight);
	for (const value of [0.1, 1, 10, 100, 1000, 10_000]) {
		parts.push(`<line x1="${hx(value).toFixed(1)}" y1="${hTop}" x2="${hx(value).toFixed(1)}" y2="${hBottom}" stroke="${value === 10 ? '#c62828' : '#e0e0e0'}" stroke-dasharray="${value === 10 ? '4 3' : ''}"/><text x="${hx(value).toFixed(1)}" y="${hBottom + 16}" text-anchor="middle">${value >= 1000 ? `${value / 1000} s` : `${value} ms`}</text>`);
	}

	parts.push(`<text x="${hx(10) + 4}" y="${hTop + 10}" fill="#c62828" font-size="11">target p99 ≤ 10 ms</text>`);
	for (const [index, entry] of holPeers.entries()) {
		const rowY = hTop + (index * rowHeight) + 6;
		const {good} = entry.headOfLine;
		const colour = colours[entry.name] ?? '#333';
		parts.push(`<text x="${hLeft - 10}" y="${rowY + 13}" text-anchor="end">${escape(entry.name)}</text>`);
		if (good.done > 0) {
			parts.push(`<rect x="${hLeft}" y="${rowY}" width="${(hx(good.p99Ms) - hLeft).toFixed(1)}" height="18" fill="${colour}" opacity="0.35"/><rect x="${hLeft}" y="${rowY + 4}" width="${(hx(good.p50Ms) - hLeft).toFixed(1)}" height="10" fill="${colour}"/>`);
			parts.push(`<text x="${(hx(good.p99Ms) + 6).toFixed(1)}" y="${rowY + 13}">p50 ${escape(ms(good.p50Ms))}, p99 ${escape(ms(good.p99Ms))} (${number(good.done)} answered${good.errors > 0 ? `, ${good.errors} not` : ''})</text>`);
		} else {
			parts.push(`<rect x="${hLeft}" y="${rowY}" width="${(hRight - hLeft).toFixed(1)}" height="18" fill="#bdbdbd" opacity="0.4"/><text x="${hLeft + 8}" y="${rowY + 13}">no good login answered within 8 s</text>`);
		}
	}

	const {machine} = report;
	parts.push(`<text x="${left}" y="${hBottom + 40}" fill="#444" font-size="11">Inner bar p50, outer bar p99. ${escape(machine.date.slice(0, 10))} · nproc ${machine.nproc} · ${escape(machine.cpu)} · Node ${escape(machine.node)} · Linux ${escape(machine.kernel)}${report.partial ? ' · partial run' : ''}</text>`);
	parts.push('</svg>');
	return `${parts.join('\n')}\n`;
}
