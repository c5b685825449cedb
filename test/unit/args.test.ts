import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { explainUnknown } from '../../src/cli/args.ts';

describe('explainUnknown', () => {
  it('names a mistyped command as a command, a stray word as an argument, a flag as an option', () => {
    assert.equal(
      explainUnknown('Unknown argument: migarte', ['migarte', '--to-host', 'x'], {}),
      'unknown command "migarte" (the commands are migrate, plan, status, verify, cleanup and cutover)',
    );
    assert.equal(
      explainUnknown('Unknown argument: extra', ['status', 'extra'], {}),
      'unexpected argument "extra" (options begin with --; a value goes right after its option)',
    );
    assert.equal(explainUnknown('Unknown argument: formHost', ['--form-host', 'x'], {}), 'unknown option --form-host');
    assert.equal(explainUnknown('Unknown argument: jobs', [], { PG_MIGRATE_JOBS: '3' }), 'unknown option from the environment variable PG_MIGRATE_JOBS');
  });
});
