/** Free loopback ports for tests; the sidecar's demo needs the same, so they live in sidecar/. */
export { freePeerPorts, freeUdpPort } from '../../sidecar/demo/free-ports';
