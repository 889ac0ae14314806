// The example web app: sign in, enqueue a process_notifications job, follow it live, cancel it.
// Bundled with the Firebase JS SDK and jobs-lib-web into app.js (`npm run build:example` in
// clients/web); `jobs demo` and `jobs dev` serve it with a config.json naming the emulators.

import { initializeApp } from "firebase/app";
import { connectAuthEmulator, getAuth, onAuthStateChanged, signInWithEmailAndPassword, signOut } from "firebase/auth";
import { connectFirestoreEmulator, getFirestore } from "firebase/firestore";

import { type Job, cancelJob, enqueueJob, watchJob } from "jobs-lib-web";

interface Config {
  projectId: string;
  apiKey: string;
  authEmulator?: string;
  firestoreEmulator?: { host: string; port: number };
  email?: string;
  password?: string;
}

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;

async function main(): Promise<void> {
  const config = (await (await fetch("config.json")).json()) as Config;
  const app = initializeApp({ projectId: config.projectId, apiKey: config.apiKey, authDomain: `${config.projectId}.firebaseapp.com` });
  const auth = getAuth(app);
  const db = getFirestore(app);
  if (config.authEmulator) connectAuthEmulator(auth, config.authEmulator, { disableWarnings: true });
  if (config.firestoreEmulator) connectFirestoreEmulator(db, config.firestoreEmulator.host, config.firestoreEmulator.port);
  $<HTMLInputElement>("email").value = config.email ?? "";
  $<HTMLInputElement>("password").value = config.password ?? "";

  let stopWatching: (() => void) | null = null;
  let current: string | null = null;

  const showError = (error: unknown) => {
    const box = $("error");
    box.textContent = error instanceof Error ? error.message : String(error);
    box.hidden = false;
  };

  onAuthStateChanged(auth, (user) => {
    $("signin").hidden = Boolean(user);
    $("app").hidden = !user;
    $("who").textContent = user?.email ?? "";
  });

  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await signInWithEmailAndPassword(auth, $<HTMLInputElement>("email").value, $<HTMLInputElement>("password").value);
    } catch (error) {
      showError(error);
    }
  });
  $("signout").addEventListener("click", () => void signOut(auth));

  const render = (job: Job) => {
    $("job").hidden = false;
    $("job-id").textContent = job.id;
    const status = $("status");
    status.textContent = job.status.replace("_", " ");
    status.dataset.status = job.status;
    const bar = $<HTMLProgressElement>("bar");
    bar.value = job.status === "completed" ? 100 : job.progress?.percent ?? 0;
    const finished = ["completed", "failed", "cancelled"].includes(job.status);
    $("message").textContent = finished ? "" : job.cancelRequested ? "cancelling..." : job.progress?.message ?? (job.status === "pending" ? "waiting for a runner" : "");
    $<HTMLButtonElement>("cancel").hidden = finished;
    $<HTMLButtonElement>("cancel").disabled = job.cancelRequested;
    $<HTMLButtonElement>("enqueue").disabled = !finished;
    const result = $("result");
    result.hidden = !finished;
    result.textContent = job.status === "completed" ? `Done: ${JSON.stringify(job.result)} users notified.` : finished ? `${job.status}: ${job.error ?? ""}` : "";
  };

  $("enqueue-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("error").hidden = true;
    stopWatching?.();
    const count = Number($<HTMLInputElement>("count").value) || 1;
    const targetUsers = Array.from({ length: count }, (_, n) => `user${String(n).padStart(3, "0")}`);
    try {
      $<HTMLButtonElement>("enqueue").disabled = true;
      current = await enqueueJob(db, "process_notifications", { targetUsers, notificationType: "course_reminder", title: $<HTMLInputElement>("title").value });
      stopWatching = watchJob(db, current, render, showError);
    } catch (error) {
      $<HTMLButtonElement>("enqueue").disabled = false;
      showError(error);
    }
  });

  $("cancel").addEventListener("click", async () => {
    if (!current) return;
    try {
      await cancelJob(db, current);
    } catch (error) {
      showError(error);
    }
  });
}

void main();
