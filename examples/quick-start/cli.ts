// The README's quick start, CLI side (kept here so that the typecheck covers it).
import { connect } from 'bridgekeeper';

await using client = await connect({ app: 'secrets-agent', name: 'my-cli' });
client.on('prompt', ({ account }) => console.error(`Approve access to ${account.displayName}…`));
const { value } = await client.request<{ value: string }>('secrets.read', {
  account: 'work',
  item: 'db',
});
console.log(value);
