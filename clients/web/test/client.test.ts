// The package against the real emulators: Firestore with the project's own firestore.rules, the
// Auth emulator of firebase-tools, and a jobs_lib worker running real handlers. tests/test_web_client.py
// starts them all, creates the users and runs this file with `node --test`; it says where they are:
// FIRESTORE_EMULATOR_HOST, FIREBASE_AUTH_EMULATOR_HOST, JOBS_PROJECT.
//
// The worker's `process_notifications` handler (tests/test_web_client.py) does what
// `metadata.notificationType` asks: "progress" (four steps over about 2.4 s), "fail" (a
// PermanentError), "slow" (reports progress every 0.2 s for 60 s, so that it can be cancelled);
// otherwise it returns the number of target users.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { type FirebaseApp, deleteApp, initializeApp } from "firebase/app";
import { type Auth, connectAuthEmulator, getAuth, signInWithEmailAndPassword } from "firebase/auth";
import { type Firestore, connectFirestoreEmulator, getFirestore, terminate } from "firebase/firestore";

import {
  type Job,
  JobAbortedError,
  JobNotFoundError,
  JobRefusedError,
  JobStateError,
  JobTimeoutError,
  cancelJob,
  enqueueJob,
  listJobs,
  waitForJob,
  watchJob,
} from "jobs-lib-web";
import "./generated/jobs.js";

const project = process.env.JOBS_PROJECT ?? "demo-jobs-test";
const [firestoreHost, firestorePort] = (process.env.FIRESTORE_EMULATOR_HOST ?? "127.0.0.1:8080").split(":");
const authHost = process.env.FIREBASE_AUTH_EMULATOR_HOST ?? "127.0.0.1:9099";

interface Session {
  app: FirebaseApp;
  db: Firestore;
  auth: Auth;
}

async function signIn(name: string): Promise<Session> {
  const app = initializeApp({ projectId: project, apiKey: "demo-api-key" }, name);
  const auth = getAuth(app);
  connectAuthEmulator(auth, `http://${authHost}`, { disableWarnings: true });
  const db = getFirestore(app);
  connectFirestoreEmulator(db, firestoreHost, Number(firestorePort));
  await signInWithEmailAndPassword(auth, `${name}@example.test`, `${name}-password`);
  return { app, db, auth };
}

/** Delete a document as the emulator's owner (the rules let no client delete a job). */
async function deleteAsOwner(id: string): Promise<void> {
  const url = `http://${firestoreHost}:${firestorePort}/v1/projects/${project}/databases/(default)/documents/backgroundJobs/${id}`;
  const answer = await fetch(url, { method: "DELETE", headers: { Authorization: "Bearer owner" } });
  assert.equal(answer.status, 200);
}

let alice: Session;
let bob: Session;

before(async () => {
  alice = await signIn("alice");
  bob = await signIn("bob");
});

after(async () => {
  for (const session of [alice, bob]) {
    await terminate(session.db);
    await deleteApp(session.app);
  }
});

describe("enqueueJob and watchJob", () => {
  test("a job enqueued by the client completes, and watchJob sees its progress move", async () => {
    const id = await enqueueJob(alice.db, "process_notifications", { targetUsers: ["u1", "u2"], notificationType: "progress" });
    const seen: Job[] = [];
    const done = await new Promise<Job>((resolve, reject) => {
      const stop = watchJob(alice.db, id, (job) => {
        seen.push(job);
        if (job.status === "completed" || job.status === "failed") {
          stop();
          resolve(job);
        }
      }, reject);
    });
    assert.equal(done.status, "completed");
    assert.deepEqual(done.result, { steps: 4 });
    assert.equal(done.createdBy, "alice");
    assert.equal(done.orgId, "acme");
    assert.equal(done.attempts, 1);
    const percents = [...new Set(seen.map((job) => job.progress?.percent).filter((p): p is number => p != null))];
    assert.ok(percents.length >= 2, `progress moved: ${JSON.stringify(percents)}`);
    assert.deepEqual(percents, [...percents].sort((a, b) => a - b));
    assert.ok(seen.some((job) => job.status === "in_progress" && job.progress?.message?.startsWith("step")), "a running job with its message");
    assert.equal(seen[0].id, id);
  });

  test("an idempotency key names one job per user", async () => {
    const first = await enqueueJob(alice.db, "process_notifications", { targetUsers: ["u9"] }, { idempotencyKey: "welcome:u9" });
    const again = await enqueueJob(alice.db, "process_notifications", { targetUsers: ["u9"] }, { idempotencyKey: "welcome:u9" });
    assert.equal(again, first);
    assert.match(first, /^k_alice_[0-9a-f]{40}$/);
    const bobs = await enqueueJob(bob.db, "process_notifications", { targetUsers: ["u9"] }, { idempotencyKey: "welcome:u9" });
    assert.notEqual(bobs, first);
    await waitForJob(alice.db, first, { timeout: 30_000 });
  });
});

describe("waitForJob", () => {
  test("resolves with the job when it completes", async () => {
    const id = await enqueueJob(alice.db, "process_notifications", { targetUsers: ["a", "b", "c"] });
    const job = await waitForJob(alice.db, id, { timeout: 30_000 });
    assert.equal(job.status, "completed");
    assert.equal(job.result, 3);
  });

  test("resolves with the job when it fails, the error on it", async () => {
    const id = await enqueueJob(alice.db, "process_notifications", { targetUsers: ["a"], notificationType: "fail" });
    const job = await waitForJob(alice.db, id, { timeout: 30_000 });
    assert.equal(job.status, "failed");
    assert.match(job.error ?? "", /card declined/);
  });

  test("resolves with the job when it is cancelled, running or pending", async () => {
    const running = await enqueueJob(alice.db, "process_notifications", { targetUsers: ["a"], notificationType: "slow" });
    const started = new Promise<void>((resolve) => {
      const stop = watchJob(alice.db, running, (job) => {
        if (job.status === "in_progress") {
          stop();
          resolve();
        }
      });
    });
    await started;
    await cancelJob(alice.db, running);
    const stopped = await waitForJob(alice.db, running, { timeout: 30_000 });
    assert.equal(stopped.status, "cancelled");

    const later = await enqueueJob(alice.db, "process_notifications", { targetUsers: ["a"] }, { scheduledFor: new Date(Date.now() + 3_600_000) });
    await cancelJob(alice.db, later);
    const cancelled = await waitForJob(alice.db, later, { timeout: 30_000 });
    assert.equal(cancelled.status, "cancelled");
    await assert.rejects(cancelJob(alice.db, later), JobStateError);
  });

  test("rejects on timeout, saying how long it waited", async () => {
    const id = await enqueueJob(alice.db, "process_notifications", { targetUsers: ["a"] }, { scheduledFor: new Date(Date.now() + 3_600_000) });
    await assert.rejects(waitForJob(alice.db, id, { timeout: 1500 }), (error: unknown) => {
      assert.ok(error instanceof JobTimeoutError);
      assert.match(error.message, /did not finish within 1500 ms \(last seen: pending\)/);
      return true;
    });
  });

  test("rejects when aborted", async () => {
    const id = await enqueueJob(alice.db, "process_notifications", { targetUsers: ["a"] }, { scheduledFor: new Date(Date.now() + 3_600_000) });
    const controller = new AbortController();
    const waiting = waitForJob(alice.db, id, { signal: controller.signal });
    setTimeout(() => controller.abort("the user left the page"), 300);
    await assert.rejects(waiting, (error: unknown) => error instanceof JobAbortedError && /the user left the page/.test(error.message));
  });

  test("rejects when the job is deleted while it waits", async () => {
    const id = await enqueueJob(alice.db, "process_notifications", { targetUsers: ["a"] }, { scheduledFor: new Date(Date.now() + 3_600_000) });
    const outcome = waitForJob(alice.db, id, { timeout: 20_000 }).then(() => null, (error: unknown) => error);
    await new Promise((resolve) => setTimeout(resolve, 500));
    await deleteAsOwner(id);
    assert.ok((await outcome) instanceof JobNotFoundError);
  });

  test("rejects when the rules do not let this user read the job", async () => {
    const id = await enqueueJob(alice.db, "process_notifications", { targetUsers: ["a"] }, { scheduledFor: new Date(Date.now() + 3_600_000) });
    await assert.rejects(waitForJob(bob.db, id, { timeout: 20_000 }), (error: unknown) => {
      assert.ok(error instanceof JobRefusedError);
      assert.match(error.message, /do not let this user read job/);
      return true;
    });
    await assert.rejects(cancelJob(bob.db, id), JobRefusedError);
  });
});

describe("what the rules refuse", () => {
  test("a type clients may not create is refused, naming the rules' list", async () => {
    await assert.rejects(
      enqueueJob(alice.db, "resize_image" as never, { path: "a.png" } as never),
      (error: unknown) => {
        assert.ok(error instanceof JobRefusedError);
        assert.match(error.message, /"resize_image" is not a type clients may create \(clientJobTypes\(\) in firestore.rules\)/);
        return true;
      },
    );
  });

  test("an internal type is refused before anything is sent", async () => {
    await assert.rejects(enqueueJob(alice.db, "jobs.webhook" as never, {} as never), /internal types/);
  });

  test("a priority above what clients may give is refused, naming it", async () => {
    await assert.rejects(enqueueJob(alice.db, "process_notifications", { targetUsers: ["a"] }, { priority: 5 }), /priority 5 above clientMaxPriority\(\)/);
  });

  test("another user's idempotent id cannot be taken", async () => {
    const first = await enqueueJob(alice.db, "process_notifications", { targetUsers: ["z"] }, { idempotencyKey: "mine" });
    // bob writes alice's keyed id himself: the rules keep k_alice_... to alice
    const { doc, setDoc, serverTimestamp } = await import("firebase/firestore");
    await assert.rejects(
      setDoc(doc(bob.db, "backgroundJobs", `${first.slice(0, -1)}0`), { type: "process_notifications", status: "pending", metadata: {}, createdBy: "bob", orgId: "acme", createdAt: serverTimestamp() }),
      /permission/i,
    );
  });
});

describe("listJobs", () => {
  test("pages the caller's own jobs, newest first", async () => {
    const made: string[] = [];
    for (let n = 0; n < 5; n++) made.push(await enqueueJob(bob.db, "process_notifications", { targetUsers: [`p${n}`] }, { scheduledFor: new Date(Date.now() + 3_600_000) }));
    const first = await listJobs(bob.db, { status: "pending", limit: 3 });
    assert.equal(first.jobs.length, 3);
    assert.ok(first.next);
    const second = await listJobs(bob.db, { status: "pending", limit: 3, after: first.next ?? undefined });
    const ids = [...first.jobs, ...second.jobs].map((job) => job.id);
    assert.deepEqual(ids.filter((id) => made.includes(id)), [...made].reverse());
    assert.ok([...first.jobs, ...second.jobs].every((job) => job.createdBy === "bob"));
    const typed = await listJobs(bob.db, { type: "process_notifications", limit: 100 });
    assert.ok(made.every((id) => typed.jobs.some((job) => job.id === id)));
  });
});
