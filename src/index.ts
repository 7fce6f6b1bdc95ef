/**
The public surface of pam-authservice. Everything a caller may use is exported here, and only here.
*/
export {
	authenticate,
	AuthServiceClient,
	defaultService,
	defaultTimeoutMs,
	type AuthenticateOptions,
	type ClientOptions,
	type Field,
	type RequestOptions,
} from './client.js';
export {
	AbortError,
	AuthServiceError,
	ClosedWithoutAnswerError,
	ConfigError,
	ConnectionFailedError,
	ConnectionRefusedError,
	errorCodes,
	InvalidFieldError,
	ListenError,
	PermissionDeniedError,
	ProtocolError,
	SocketMissingError,
	TimeoutError,
	type ErrorCode,
	type FieldName,
} from './errors.js';
export {defaultSocketPath, resolveSocketPath, socketPathVariable} from './socket-path.js';
