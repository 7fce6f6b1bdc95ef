/**
The built-in demo: a PAM sandbox (pam_wrapper + pam_matrix) with one demo user, and the socket in
a local folder. Nothing in `/etc` is read or touched, and it runs without root.
*/
import path from 'node:path';
import {createPamSandbox} from './sandbox.js';

export const demoUser = {user: 'demo', password: 'demo-password', service: 'x2gobroker'} as const;

export type Demo = {
	readonly socketPath: string;
	/** Set in the daemon's environment before any worker starts: workers inherit it. */
	readonly workerEnvironment: Readonly<Record<string, string>>;
	/** What to tell the person who started it. */
	readonly banner: string;
};

export function createDemo(directory: string): Demo {
	const folder = path.resolve(directory);
	const sandbox = createPamSandbox({directory: folder, users: [demoUser]});
	const socketPath = path.join(folder, 'authservice.socket');
	const client = path.relative(process.cwd(), new URL('cli/client.js', import.meta.url).pathname) || 'pam-authservice';
	const socket = path.relative(process.cwd(), socketPath);
	const banner = [
		'',
		`pam-authserviced demo: PAM stack ${sandbox.serviceDirectory}/x2gobroker (pam_wrapper + pam_matrix), socket ${socket}`,
		`Demo user: ${demoUser.user}, password: ${demoUser.password}. In another terminal, paste one of:`,
		'',
		`  node ${client} check --user ${demoUser.user} --socket ${socket}`,
		`  printf 'demo\\rdemo-password\\rx2gobroker\\ndemo\\rwrong\\rx2gobroker\\n' | node ${client} raw --socket ${socket}`,
		'',
		'Stop it with Ctrl-C.',
		'',
	].join('\n');
	return {socketPath, workerEnvironment: sandbox.environment, banner};
}
