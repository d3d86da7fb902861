/**
 * Structured JSON logs to stdout (pino). Session ids and contents are never logged.
 */
import pino, { type Logger } from 'pino';
import type { LogLevel } from './config';

export function createLogger(level: LogLevel, nodeId: string): Logger {
  return pino({
    level,
    base: { node_id: nodeId },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}
