/** The BatonClientError a promise rejects with; fails the test if it resolves or rejects otherwise. */
import { BatonClientError } from '../../src/client/client';

export async function rejection(promise: Promise<unknown>): Promise<BatonClientError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(BatonClientError);
    return err as BatonClientError;
  }
  throw new Error('expected the promise to reject');
}
