/**
Owns where the socket is: the daemon listens there, the client connects there.
*/

/** Where x2gobroker looks for its authentication service. */
export const defaultSocketPath = '/run/x2gobroker/x2gobroker-authservice.socket';

/** The variable x2gobroker reads to find the socket elsewhere; the daemon honours it too. */
export const socketPathVariable = 'X2GOBROKER_AUTHSERVICE_SOCKET';

/**
The socket path: `$X2GOBROKER_AUTHSERVICE_SOCKET` when it is set and not empty, else the default.

@param env - The environment to read.
@default process.env
*/
export function resolveSocketPath(env: NodeJS.ProcessEnv = process.env): string {
	const fromEnvironment = env[socketPathVariable];
	return fromEnvironment ? fromEnvironment : defaultSocketPath;
}
