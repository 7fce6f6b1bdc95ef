// Summaries of a V8 CPU profile (`node --cpu-prof`) and of a `perf record` of the whole machine,
// for the benchmark's report: where the time went, by function and by part.
import {spawnSync} from 'node:child_process';

function round(value, digits = 1) {
	const scale = 10 ** digits;
	return Math.round(value * scale) / scale;
}

/** The part of the program a function belongs to. */
function partOf(callFrame, root) {
	const {functionName, url} = callFrame;
	if (['(idle)', '(program)', '(garbage collector)', '(root)'].includes(functionName)) {
		return functionName;
	}

	if (url.startsWith('node:')) {
		return 'Node.js built-in modules (node:*)';
	}

	const modules = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
	if (modules) {
		return `package ${modules[1]}`;
	}

	if (url.startsWith('file://')) {
		return `this project: ${decodeURIComponent(url.slice('file://'.length)).replace(root, '')}`;
	}

	return 'native (V8 builtins, Node bindings)';
}

function label(callFrame, root) {
	const name = callFrame.functionName || '(anonymous)';
	const where = callFrame.url
		? `${decodeURIComponent(callFrame.url.replace(/^file:\/\//, '')).replace(root, '').replace(/^.*\/node_modules\//, '')}:${callFrame.lineNumber + 1}`
		: 'native';
	return `${name} ${where}`;
}

/**
Self and inclusive time by function and by part of the program, from the samples taken within
`window` ({startUs, endUs}, CLOCK_MONOTONIC like the profile's own clock) if given: the load, not
the start-up.
*/
export function summariseCpuProfile(profile, root, window) {
	const nodes = new Map(profile.nodes.map(node => [node.id, node]));
	const selfUs = new Map();
	const deltas = profile.timeDeltas;
	const average = (profile.endTime - profile.startTime) / Math.max(1, profile.samples.length);
	const inWindow = window && profile.startTime < window.endUs && profile.endTime > window.startUs;
	let at = profile.startTime;
	let kept = 0;
	for (let index = 0; index < profile.samples.length; index++) {
		at += deltas[index];
		if (inWindow && (at < window.startUs || at > window.endUs)) {
			continue;
		}

		kept++;
		const us = deltas[index + 1] ?? average;
		selfUs.set(profile.samples[index], (selfUs.get(profile.samples[index]) ?? 0) + us);
	}

	const totalUs = [...selfUs.values()].reduce((sum, us) => sum + us, 0);
	const idleUs = [...selfUs].filter(([id]) => nodes.get(id).callFrame.functionName === '(idle)').reduce((sum, [, us]) => sum + us, 0);
	const busyUs = totalUs - idleUs;
	const byFunction = new Map();
	const byPart = new Map();
	for (const [id, us] of selfUs) {
		const {callFrame} = nodes.get(id);
		if (callFrame.functionName === '(idle)') {
			continue;
		}

		const key = label(callFrame, root);
		byFunction.set(key, (byFunction.get(key) ?? 0) + us);
		const part = partOf(callFrame, root);
		byPart.set(part, (byPart.get(part) ?? 0) + us);
	}

	// Inclusive time of this project's functions (self and all they call), for the big picture.
	const inclusive = new Map();
	const totals = new Map();
	const total = id => {
		if (!totals.has(id)) {
			const node = nodes.get(id);
			totals.set(id, (selfUs.get(id) ?? 0) + (node.children ?? []).reduce((sum, child) => sum + total(child), 0));
		}

		return totals.get(id);
	};

	for (const node of profile.nodes) {
		if (partOf(node.callFrame, root).startsWith('this project')) {
			const key = label(node.callFrame, root);
			// A function on the stack twice (recursion) is counted once: only its outermost frames.
			inclusive.set(key, (inclusive.get(key) ?? 0) + total(node.id));
		}
	}

	const share = us => round(us / busyUs * 100);
	const top = (map, count) => [...map].sort((a, b) => b[1] - a[1]).slice(0, count).map(([name, us]) => ({name, ms: round(us / 1000), percentOfBusy: share(us)}));
	return {
		samples: kept,
		onlyTheLoad: Boolean(inWindow),
		wallMs: round(totalUs / 1000),
		busyMs: round(busyUs / 1000),
		busyShare: round(busyUs / totalUs * 100),
		topSelf: top(byFunction, 20),
		byPart: top(byPart, 15),
		topInclusiveProject: top(inclusive, 12),
	};
}

/** `perf report` of a system-wide `perf record`: time by process and library, and the hottest symbols. */
export function summarisePerf(file) {
	const report = sort => {
		const output = spawnSync('perf', ['report', '-i', file, '--stdio', '--no-children', '--sort', sort, '-q', '--percent-limit', '0.5'], {encoding: 'utf8', timeout: 60_000, maxBuffer: 64 << 20});
		return (output.stdout ?? '').split('\n').map(line => line.trim()).filter(line => /^\d/.test(line)).slice(0, 25);
	};

	return {byProcessAndLibrary: report('comm,dso'), bySymbol: report('comm,dso,sym')};
}
