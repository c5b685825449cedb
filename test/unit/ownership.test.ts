import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ownershipPlan } from '../../src/pipeline/ownership.ts';
import type { RoleRow } from '../../src/pipeline/roles.ts';

const role = (name: string, superuser = false): [string, RoleRow] => [
  name,
  {
    name,
    superuser,
    inherit: true,
    createrole: false,
    createdb: false,
    login: true,
    replication: false,
    bypassrls: false,
    connlimit: -1,
    validuntil: null,
    config: null,
  },
];

describe('ownershipPlan', () => {
  const targetRoles = new Map([role('postgres', true), role('migrator'), role('app'), role('team'), role('locked')]);
  const can = new Map([
    ['app', { member: false, grantable: true }],
    ['team', { member: true, grantable: true }],
    ['locked', { member: false, grantable: false }],
  ]);

  it('grants the owners it may, leaves alone those it is a member of, and names every owner it may not assign', () => {
    const owners = new Map([
      ['shop', ['app', 'migrator', 'team', 'newrole']],
      ['crm', ['app', 'postgres', 'locked', 'ghost']],
    ]);
    const plan = ownershipPlan(owners, 'migrator', targetRoles, new Set(['newrole']), can);
    assert.deepEqual(plan.grant, ['app', 'newrole']);
    assert.equal(plan.problems.length, 3, plan.problems.join('\n'));
    assert.match(plan.problems[0]!, /^role ghost owns objects in crm on the source and does not exist on the target/);
    assert.match(plan.problems[1]!, /^role locked owns objects in crm .* GRANT locked TO migrator/);
    assert.match(plan.problems[2]!, /^role postgres owns objects in crm on the source and is a superuser on the target.*REASSIGN OWNED BY postgres/);
  });

  it('has nothing to do when the target user owns everything', () => {
    assert.deepEqual(ownershipPlan(new Map([['shop', ['migrator']]]), 'migrator', targetRoles, new Set(), can), { grant: [], problems: [] });
  });
});
