import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { listenUnixSocket, unixSocketConnector } from '../../src/transport/unix-socket.js';
import { runTransportContract } from './transport-contract.js';

runTransportContract('unix socket', async () => {
  const directory = await mkdtemp(path.join(os.tmpdir(), 'bk-contract-'));
  const listener = await listenUnixSocket({ path: path.join(directory, 'agent.sock') });
  const connector = unixSocketConnector();
  return {
    listener,
    connect: (options) => connector.connect(listener.address, options),
    cleanup: () => rm(directory, { recursive: true, force: true }),
  };
});
