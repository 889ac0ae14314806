/**
 * jobs-lib-web: enqueue, watch and wait for jobs_lib background jobs from a web app.
 *
 * The functions write and read the `backgroundJobs` documents the project's `firestore.rules`
 * let a signed-in user write and read, with the modular Firebase JS SDK (a peer dependency, v10
 * to v12): no server of yours in between. Watching is a Firestore listener on one document: one
 * billed read per change it sees, nothing while the job waits.
 *
 *     import { enqueueJob, waitForJob } from "jobs-lib-web";
 *     const id = await enqueueJob(db, "process_notifications", { targetUsers: ["u1"] });
 *     const job = await waitForJob(db, id, { timeout: 60_000 });
 *
 * `jobs types` (the Python side) writes the input types of the project's handlers as an
 * augmentation of `JobInputs`, so that `enqueueJob("resize_image", {...})` is checked by tsc
 * against the handler's pydantic model.
 */

import type { Auth, User } from "firebase/auth";
import { getAuth } from "firebase/auth";
import {
  type DocumentData,
  type DocumentSnapshot,
  type Firestore,
  type QueryConstraint,
  Timestamp,
  collection,
  doc,
  getDoc,
  getDocs,
  limit as limitTo,
  onSnapshot,
  orderBy,
  query,
  serverTimestamp,
  setDoc,
  startAfter,
  updateDoc,
  where,
} from "firebase/firestore";

// -- types -------------------------------------------------------------------------------------

/** The states of a job (jobs_lib's `Status`). */
export type JobStatus = "pending" | "blocked" | "in_progress" | "completed" | "failed" | "cancelled";

/** The final states: `waitForJob` resolves on these. */
export const FINISHED: readonly JobStatus[] = ["completed", "failed", "cancelled"];

/** What a running job last reported (`ctx.progress(percent, message, step, total_steps)`). */
export interface Progress {
  percent: number | null;
  message: string | null;
  currentStep: number | null;
  totalSteps: number | null;
  updatedAt: Date | null;
}

/**
 * The input of each job type, by type name. Empty here: `jobs types` writes an augmentation of it
 * from the project's handlers (`declare module "jobs-lib-web" { interface JobInputs { ... } }`).
 */
// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface JobInputs {}

/** A job type: one of `JobInputs` once the generated types are loaded, any string before. */
export type JobType = [keyof JobInputs] extends [never] ? string : Extract<keyof JobInputs, string>;

/** The metadata a job of type `T` takes. */
export type InputOf<T extends string> = T extends keyof JobInputs ? JobInputs[T] : Record<string, unknown>;

/** One job as its owner sees it: plain values, no snapshots. */
export interface Job<T extends string = string> {
  id: string;
  type: T;
  status: JobStatus;
  metadata: Record<string, unknown>;
  createdAt: Date | null;
  scheduledFor: Date | null;
  startedAt: Date | null;
  completedAt: Date | null;
  attempts: number;
  maxAttempts: number | null;
  priority: number;
  progress: Progress | null;
  result: unknown;
  error: string | null;
  cancelRequested: boolean;
  createdBy: string | null;
  orgId: string | null;
}

/** Where the jobs live, and who is signed in. */
export interface ClientOptions {
  /** The jobs collection (`JOBS_COLLECTION`): `backgroundJobs` by default. */
  collection?: string;
  /** The Auth instance of the signed-in user: `getAuth(db.app)` by default. */
  auth?: Auth;
}

export interface EnqueueOptions extends ClientOptions {
  /** Earliest run time (the rules refuse one more than 10 minutes in the past). */
  scheduledFor?: Date;
  /** Higher runs first; the rules cap what a user may give (`clientMaxPriority()`, 0 by default). */
  priority?: number;
  /** Overrides the handler's attempts (the rules allow 1 to 10). */
  maxAttempts?: number;
  /**
   * Makes the call idempotent: the same user, type and key always name the same job, created once
   * (a second call resolves to the first one's id). The id is `k_<uid>_<hash>`: the rules keep ids
   * of that form to their user.
   */
  idempotencyKey?: string;
}

export interface WaitOptions extends ClientOptions {
  /** Milliseconds to wait before rejecting with `JobTimeoutError` (none by default). */
  timeout?: number;
  /** Rejects with `JobAbortedError` when aborted. */
  signal?: AbortSignal;
  /** Called with every change seen while waiting, as `watchJob`'s `onChange`. */
  onChange?: (job: Job) => void;
}

export interface ListOptions extends ClientOptions {
  status?: JobStatus;
  type?: string;
  /** Jobs per page (1 to 100, 20 by default). */
  limit?: number;
  /** The `next` of the previous page. */
  after?: JobCursor;
}

/** Where the next page of `listJobs` starts (opaque). */
export interface JobCursor {
  readonly snapshot: DocumentSnapshot<DocumentData>;
}

export interface JobPage {
  jobs: Job[];
  /** The next page's cursor, or null on the last page. */
  next: JobCursor | null;
}

// -- errors ------------------------------------------------------------------------------------

/** Every error these functions raise: `code` says which, the message what to do about it. */
export class JobsClientError extends Error {
  readonly code: string;
  override readonly cause: unknown;

  constructor(code: string, message: string, cause?: unknown) {
    super(message);
    this.name = "JobsClientError";
    this.code = code;
    this.cause = cause;
  }
}

/** No user is signed in (every job belongs to one). */
export class NotSignedInError extends JobsClientError {
  constructor() {
    super("not-signed-in", "no user is signed in: sign in with Firebase Auth before enqueuing or watching jobs");
    this.name = "NotSignedInError";
  }
}

/** The project's rules refused the request; the message names the field or permission as far as the SDK lets us know. */
export class JobRefusedError extends JobsClientError {
  constructor(message: string, cause?: unknown) {
    super("permission-denied", message, cause);
    this.name = "JobRefusedError";
  }
}

/** The job does not exist (or was deleted while watched). */
export class JobNotFoundError extends JobsClientError {
  constructor(id: string) {
    super("not-found", `no job with id ${JSON.stringify(id)} (it may have been deleted by the retention cleanup)`);
    this.name = "JobNotFoundError";
  }
}

/** `waitForJob` gave up: the job had not finished within the timeout. */
export class JobTimeoutError extends JobsClientError {
  readonly job: Job | null;

  constructor(id: string, timeout: number, job: Job | null) {
    const state = job ? `${job.status}${job.progress?.percent != null ? `, ${job.progress.percent}%` : ""}` : "not read yet";
    super("timeout", `job ${id} did not finish within ${timeout} ms (last seen: ${state})`);
    this.name = "JobTimeoutError";
    this.job = job;
  }
}

/** `waitForJob` was aborted through its signal. */
export class JobAbortedError extends JobsClientError {
  constructor(id: string, reason: unknown) {
    super("aborted", `waiting for job ${id} was aborted${reason === undefined ? "" : `: ${String(reason)}`}`, reason);
    this.name = "JobAbortedError";
  }
}

/** The job is not in a state that allows the action (cancelling a finished job). */
export class JobStateError extends JobsClientError {
  constructor(message: string) {
    super("failed-precondition", message);
    this.name = "JobStateError";
  }
}

// -- the functions -----------------------------------------------------------------------------

const DEFAULT_COLLECTION = "backgroundJobs";
/** The time a client's clock may be off, as the rules allow it (`clientClockSkew()`). */
const CLOCK_SKEW_MS = 10 * 60 * 1000;

/**
 * Create a job for the signed-in user and resolve to its id.
 *
 * Writes what the project's rules accept: `type`, `status: "pending"`, `metadata`, server
 * timestamps for `createdAt` (and `scheduledFor` unless given), `createdBy` (the user's uid),
 * `orgId` (the `orgId` claim of their ID token, when it has one), and `priority`, `maxAttempts`
 * when given. The runner adds what it needs with its first write.
 */
export async function enqueueJob<T extends JobType>(db: Firestore, type: T, metadata: InputOf<T>, options: EnqueueOptions = {}): Promise<string> {
  if (typeof type !== "string" || !type.trim()) {
    throw new JobsClientError("invalid-argument", "a job needs a type: the name of a registered handler");
  }
  if (type.startsWith("jobs.")) {
    throw new JobRefusedError(`${JSON.stringify(type)} is one of jobs_lib's internal types (webhook deliveries, housekeeping): users cannot create it`);
  }
  if (options.scheduledFor && options.scheduledFor.getTime() < Date.now() - CLOCK_SKEW_MS) {
    throw new JobsClientError("invalid-argument", `scheduledFor ${options.scheduledFor.toISOString()} is in the past: the rules refuse a job dated more than 10 minutes back`);
  }
  const user = currentUser(db, options);
  const claims = (await user.getIdTokenResult()).claims;
  const orgId = typeof claims.orgId === "string" ? claims.orgId : null;
  const data: Record<string, unknown> = {
    type,
    status: "pending",
    metadata: metadata ?? {},
    createdAt: serverTimestamp(),
    scheduledFor: options.scheduledFor ? Timestamp.fromDate(options.scheduledFor) : serverTimestamp(),
    createdBy: user.uid,
  };
  if (orgId !== null) data.orgId = orgId;
  if (options.priority !== undefined) data.priority = options.priority;
  if (options.maxAttempts !== undefined) data.maxAttempts = options.maxAttempts;
  const jobs = collection(db, collectionOf(options));
  const ref = options.idempotencyKey !== undefined ? doc(jobs, await keyedId(user.uid, type, options.idempotencyKey)) : doc(jobs);
  try {
    await setDoc(ref, data);
  } catch (error) {
    if (options.idempotencyKey !== undefined && isCode(error, "permission-denied")) {
      // The key's job may exist already: setDoc on it is an update, which the rules refuse. If it
      // is ours (we may read it), this call's answer is that job.
      const existing = await getDoc(ref).catch(() => null);
      if (existing?.exists() && existing.get("createdBy") === user.uid && existing.get("type") === type) return ref.id;
    }
    throw refusal(error, `create a ${JSON.stringify(type)} job`, data);
  }
  return ref.id;
}

/**
 * Follow one job in real time: `onChange` gets the job as it is now, then after every change
 * (status, progress, attempts, result, error). Returns the function that stops listening.
 * `onError` gets a `JobNotFoundError` when the job does not exist or is deleted, and a
 * `JobRefusedError` when the rules do not let this user read it; listening stops after either.
 */
export function watchJob(db: Firestore, id: string, onChange: (job: Job) => void, onError?: (error: JobsClientError) => void, options: ClientOptions = {}): () => void {
  let stopped = false;
  let seen = false;
  const stop = onSnapshot(
    doc(db, collectionOf(options), id),
    (snapshot) => {
      if (stopped) return;
      if (!snapshot.exists()) {
        stopped = true;
        stop();
        onError?.(new JobNotFoundError(id));
        return;
      }
      seen = true;
      onChange(toJob(snapshot));
    },
    (error) => {
      stopped = true;
      // The rules read the job to decide who may read it, so a job deleted while watched ends the
      // listener with permission-denied, as one that never was the user's does: having seen it, it
      // was deleted (by the retention cleanup, or an operator).
      onError?.(seen && isCode(error, "permission-denied") ? new JobNotFoundError(id) : refusal(error, `read job ${id}`));
    },
  );
  return () => {
    stopped = true;
    stop();
  };
}

/**
 * Resolve with the job once it is completed, failed or cancelled (whichever: check `status`).
 * Rejects with `JobTimeoutError` after `timeout` ms, `JobAbortedError` when `signal` aborts,
 * `JobNotFoundError` when there is no such job or it is deleted, `JobRefusedError` when the rules
 * do not let this user read it.
 */
export function waitForJob(db: Firestore, id: string, options: WaitOptions = {}): Promise<Job> {
  return new Promise<Job>((resolve, reject) => {
    let last: Job | null = null;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stop: () => void = () => undefined;
    const finish = (settle: () => void) => {
      stop();
      if (timer !== undefined) clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      settle();
    };
    const onAbort = () => finish(() => reject(new JobAbortedError(id, options.signal?.reason)));
    if (options.signal?.aborted) {
      reject(new JobAbortedError(id, options.signal.reason));
      return;
    }
    options.signal?.addEventListener("abort", onAbort, { once: true });
    if (options.timeout !== undefined) {
      timer = setTimeout(() => finish(() => reject(new JobTimeoutError(id, options.timeout as number, last))), options.timeout);
    }
    stop = watchJob(
      db,
      id,
      (job) => {
        last = job;
        options.onChange?.(job);
        if (FINISHED.includes(job.status)) finish(() => resolve(job));
      },
      (error) => finish(() => reject(error)),
      options,
    );
  });
}

/**
 * Ask a pending or running job of the signed-in user's to stop (`cancelRequested: true`, the one
 * change the rules allow its owner). A pending job ends `cancelled` when a runner next sees it; a
 * running one when its handler next reports progress or checks. Rejects with `JobStateError` for
 * a finished job and `JobNotFoundError` for none.
 */
export async function cancelJob(db: Firestore, id: string, options: ClientOptions = {}): Promise<void> {
  const ref = doc(db, collectionOf(options), id);
  let snapshot: DocumentSnapshot<DocumentData>;
  try {
    snapshot = await getDoc(ref);
  } catch (error) {
    throw refusal(error, `read job ${id}`);
  }
  if (!snapshot.exists()) throw new JobNotFoundError(id);
  const job = toJob(snapshot);
  if (FINISHED.includes(job.status)) throw new JobStateError(`job ${id} is ${job.status}: only pending and running jobs can be cancelled`);
  if (job.cancelRequested) return;
  try {
    await updateDoc(ref, { cancelRequested: true });
  } catch (error) {
    throw refusal(error, `cancel job ${id}`);
  }
}

/**
 * A page of the signed-in user's own jobs, newest first, optionally of one status and type.
 * Served by the composite indexes `(createdBy, [status,] [type,] createdAt desc)` that
 * firestore.indexes.json declares.
 */
export async function listJobs(db: Firestore, options: ListOptions = {}): Promise<JobPage> {
  const user = currentUser(db, options);
  const size = Math.min(Math.max(Math.trunc(options.limit ?? 20), 1), 100);
  const constraints: QueryConstraint[] = [where("createdBy", "==", user.uid)];
  if (options.status) constraints.push(where("status", "==", options.status));
  if (options.type) constraints.push(where("type", "==", options.type));
  constraints.push(orderBy("createdAt", "desc"), orderBy("__name__", "desc"));
  if (options.after) constraints.push(startAfter(options.after.snapshot));
  constraints.push(limitTo(size + 1));
  let snapshots;
  try {
    snapshots = await getDocs(query(collection(db, collectionOf(options)), ...constraints));
  } catch (error) {
    throw refusal(error, "list your jobs");
  }
  const docs = snapshots.docs;
  const page = docs.slice(0, size);
  return { jobs: page.map(toJob), next: docs.length > size ? { snapshot: page[page.length - 1] } : null };
}

// -- reading a document ------------------------------------------------------------------------

/** A job document as a plain `Job` (defensive: apps may have written anything). */
export function toJob(snapshot: DocumentSnapshot<DocumentData>): Job {
  const data = snapshot.data() ?? {};
  const progress = isRecord(data.progress) ? data.progress : null;
  return {
    id: snapshot.id,
    type: typeof data.type === "string" ? data.type : "",
    status: (typeof data.status === "string" ? data.status : "pending") as JobStatus,
    metadata: isRecord(data.metadata) ? data.metadata : {},
    createdAt: toDate(data.createdAt),
    scheduledFor: toDate(data.scheduledFor),
    startedAt: toDate(data.startedAt),
    completedAt: toDate(data.completedAt),
    attempts: typeof data.attempts === "number" ? data.attempts : 0,
    maxAttempts: typeof data.maxAttempts === "number" ? data.maxAttempts : null,
    priority: typeof data.priority === "number" ? data.priority : 0,
    progress: progress
      ? {
          percent: typeof progress.percent === "number" ? progress.percent : null,
          message: typeof progress.message === "string" ? progress.message : null,
          currentStep: typeof progress.currentStep === "number" ? progress.currentStep : null,
          totalSteps: typeof progress.totalSteps === "number" ? progress.totalSteps : null,
          updatedAt: toDate(progress.updatedAt),
        }
      : null,
    result: data.result === undefined ? null : data.result,
    error: typeof data.error === "string" ? data.error : data.error == null ? null : String(data.error),
    cancelRequested: data.cancelRequested === true,
    createdBy: typeof data.createdBy === "string" ? data.createdBy : null,
    orgId: typeof data.orgId === "string" ? data.orgId : null,
  };
}

function toDate(value: unknown): Date | null {
  if (value instanceof Timestamp) return value.toDate();
  if (typeof value === "string") {
    const parsed = new Date(value);
    return Number.isNaN(parsed.getTime()) ? null : parsed;
  }
  return null;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

// -- helpers -----------------------------------------------------------------------------------

function collectionOf(options: ClientOptions): string {
  return options.collection ?? DEFAULT_COLLECTION;
}

function currentUser(db: Firestore, options: ClientOptions): User {
  const user = (options.auth ?? getAuth(db.app)).currentUser;
  if (!user) throw new NotSignedInError();
  return user;
}

/** The Firestore error code of `error` (the SDK's errors carry a `code` string; matched by
 * shape, since an app may load a second copy of the SDK whose classes differ from ours). */
function codeOf(error: unknown): string | null {
  if (typeof error === "object" && error !== null && "code" in error && typeof (error as { code: unknown }).code === "string") {
    return (error as { code: string }).code;
  }
  return null;
}

function isCode(error: unknown, code: string): boolean {
  return codeOf(error) === code;
}

/** The id an idempotency key names for one user and type: `k_<uid>_` and 40 hex characters of SHA-256. */
async function keyedId(uid: string, type: string, key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`${type}\u0000${key}`));
  const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  return `k_${uid}_${hex.slice(0, 40)}`;
}

/**
 * A FirestoreError as an error a person can act on. Firestore's answer to a refused write says
 * only "Missing or insufficient permissions", so the message lists what the project's rules check
 * on that request, with the values sent.
 */
function refusal(error: unknown, what: string, data?: Record<string, unknown>): JobsClientError {
  if (error instanceof JobsClientError) return error;
  if (isCode(error, "permission-denied")) {
    if (data) {
      const type = JSON.stringify(data.type);
      return new JobRefusedError(
        `the project's rules refused to ${what}: either ${type} is not a type clients may create (clientJobTypes() in firestore.rules), ` +
          `or a field was refused (metadata over its bounds for ${type}; priority ${data.priority ?? 0} above clientMaxPriority(); ` +
          `maxAttempts ${data.maxAttempts ?? "(none)"} outside 1-10; an orgId claim ${JSON.stringify(data.orgId ?? null)} not the token's), ` +
          `or the id is one the rules keep from clients`,
        error,
      );
    }
    return new JobRefusedError(
      `the project's rules do not let this user ${what}: there is no such job, or it is not theirs (only its creator, and an admin of its organisation for reading, may)`,
      error,
    );
  }
  if (isCode(error, "not-found")) return new JobsClientError("not-found", `could not ${what}: no such job`, error);
  const code = codeOf(error) ?? "unknown";
  const message = error instanceof Error ? error.message : String(error);
  return new JobsClientError(code, `could not ${what}: ${message}`, error);
}
