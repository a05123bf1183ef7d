import { MemoryListener } from '../../src/transport/memory.js';
import { runTransportContract } from './transport-contract.js';

runTransportContract('memory', async () => {
  const listener = new MemoryListener();
  return {
    listener,
    connect: (options) => listener.connect(options),
    cleanup: async () => {},
  };
});

runTransportContract('memory (through its connector)', async () => {
  const listener = new MemoryListener('memory://contract');
  const connector = listener.connector();
  return {
    listener,
    connect: (options) => connector.connect(listener.address, options),
    cleanup: async () => {},
  };
});
