// The `posix` package ships no types; these cover what src/system.ts uses.
declare module 'posix' {
	type Passwd = {name: string; passwd: string; uid: number; gid: number; gecos: string; shell: string; dir: string};
	type Group = {name: string; passwd: string; gid: number; members: string[]};
	type Limit = {soft: number | null; hard: number | null};
	const posix: {
		getpwnam(user: string | number): Passwd;
		getgrnam(group: string | number): Group;
		getrlimit(resource: string): Limit;
		setrlimit(resource: string, limits: Partial<Limit>): void;
	};
	export default posix;
}
