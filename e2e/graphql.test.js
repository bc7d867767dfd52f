// /graphql/v1 with a real GraphQL client from npm (graphql-request 7) on the agency schema:
// a project's wizard sessions, active context snapshot and its roadmap with nested phases and
// tasks in one query; a mutation creating a task; atMost's error; another tenant sees nothing.
// Driven by crates/testkit/tests/it/graphql.rs (graphql_e2e_graphql_request), which seeds the
// roadmap and passes the ids and tokens in the environment.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GraphQLClient, ClientError, gql } from 'graphql-request';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} must be set (run through cargo test)`);
  return v;
};
const URL = `${env('SUPABASE_URL')}/graphql/v1`;
const ANON = env('SUPABASE_ANON_KEY');
const ALICE = env('GQL_ALICE_TOKEN');
const BOB = env('GQL_BOB_TOKEN');
const ORG_A = env('GQL_ORG_A');
const PROJECT = env('GQL_PROJECT');
const PHASE = env('GQL_PHASE');

const as = (token) =>
  new GraphQLClient(URL, { headers: { apikey: ANON, Authorization: `Bearer ${token}` } });

const ROADMAP = gql`
  query Roadmap($project: UUID!) {
    projectsCollection(filter: { id: { eq: $project } }) {
      edges {
        node {
          name
          wizard_sessionsCollection { edges { node { current_step wizard_completed_at } } }
          context_snapshotsCollection(filter: { is_active: { eq: true } }) {
            edges {
              node {
                version
                summary
                roadmaps {
                  total_duration
                  roadmap_phasesCollection(orderBy: [{ order_index: AscNullsLast }]) {
                    edges {
                      node {
                        title
                        order_index
                        tasksCollection(orderBy: [{ title: AscNullsLast }]) {
                          totalCount
                          edges { node { title status priority } }
                        }
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
  }
`;

test('roadmap with nested phases and tasks in one query', async () => {
  const data = await as(ALICE).request(ROADMAP, { project: PROJECT });
  const project = data.projectsCollection.edges[0].node;
  assert.equal(project.name, 'Acme Site');
  assert.equal(project.wizard_sessionsCollection.edges[0].node.current_step, 5);
  assert.ok(project.wizard_sessionsCollection.edges[0].node.wizard_completed_at);
  const snapshot = project.context_snapshotsCollection.edges[0].node;
  assert.equal(snapshot.version, 1);
  assert.equal(snapshot.summary, 'Redesign the storefront');
  const phases = snapshot.roadmaps.roadmap_phasesCollection.edges.map((e) => e.node);
  assert.deepEqual(phases.map((p) => p.title), ['Discovery', 'Build']);
  assert.equal(phases[0].tasksCollection.totalCount, 2);
  assert.deepEqual(
    phases[0].tasksCollection.edges.map((e) => e.node.title),
    ['Interview the team', 'Map the journeys'],
  );
  assert.equal(phases[1].tasksCollection.edges[0].node.status, 'todo');
});

test('another tenant sees no roadmap', async () => {
  const data = await as(BOB).request(ROADMAP, { project: PROJECT });
  assert.deepEqual(data.projectsCollection.edges, []);
});

test('a mutation creates a task, which the roadmap then shows', async () => {
  const data = await as(ALICE).request(
    gql`
      mutation NewTask($org: UUID!, $phase: UUID!, $title: String!) {
        insertIntotasksCollection(
          objects: [{ org_id: $org, phase_id: $phase, title: $title, priority: "high", tags: ["e2e"] }]
        ) {
          affectedCount
          records { nodeId title status priority tags roadmap_phases { title } }
        }
      }
    `,
    { org: ORG_A, phase: PHASE, title: 'Write the brief' },
  );
  const res = data.insertIntotasksCollection;
  assert.equal(res.affectedCount, 1);
  const task = res.records[0];
  assert.equal(task.title, 'Write the brief');
  assert.equal(task.status, 'todo');
  assert.deepEqual(task.tags, ['e2e']);
  assert.equal(task.roadmap_phases.title, 'Discovery');
  const again = await as(ALICE).request(ROADMAP, { project: PROJECT });
  const phase = again.projectsCollection.edges[0].node.context_snapshotsCollection.edges[0].node
    .roadmaps.roadmap_phasesCollection.edges[0].node;
  assert.equal(phase.tasksCollection.totalCount, 3);
  // node(nodeId:) finds it again.
  const node = await as(ALICE).request(
    gql`query($id: ID!) { node(nodeId: $id) { ... on tasks { title } } }`,
    { id: task.nodeId },
  );
  assert.equal(node.node.title, 'Write the brief');
});

test('atMost: an update touching too many rows is refused and rolled back', async () => {
  await assert.rejects(
    as(ALICE).request(
      gql`mutation { updatetasksCollection(set: { status: "done" }, filter: { status: { eq: "todo" } }) { affectedCount } }`,
    ),
    (e) => {
      assert.ok(e instanceof ClientError);
      assert.equal(e.response.errors[0].message, 'update impacts too many records');
      return true;
    },
  );
  const data = await as(ALICE).request(
    gql`{ tasksCollection(filter: { status: { eq: "done" } }) { totalCount } }`,
  );
  assert.equal(data.tasksCollection.totalCount, 0);
});
