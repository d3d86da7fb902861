/**
 * The baton package: the typed client applications use, the well-known part types, and
 * the hashing every node agrees on.
 */
export * from './client/client';
export { BuzHash, RollingBuzHash } from './store/buzhash';
export { AuthState, CartState, CartItem, Address, TcpConnectionState, TcpState, TlsSessionState } from './gen/baton/v1/parts';
export { EventType, type Part, type Session, type WatchEvent, type PutResponse } from './gen/baton/v1/session';
export type { StatusResponse, Member } from './gen/baton/v1/cluster';
export { attachTlsResumption, type TlsResumption, type TlsResumptionOptions } from './capture/tls-resumption';
export type { TlsResumptionSource, TlsResumptionSettings } from './capture/tls-resumption-source';
