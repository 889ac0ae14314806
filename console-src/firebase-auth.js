// The console's Firebase sign-in, bundled with the Firebase JS SDK into
// jobs_lib/console/static/firebase-auth.js by scripts/build-console (the built file is committed,
// so installing jobs_lib needs no build step and the page needs no CDN).
import { initializeApp } from "firebase/app";
import {
  GoogleAuthProvider, browserSessionPersistence, connectAuthEmulator, getAuth, onAuthStateChanged,
  setPersistence, signInWithEmailAndPassword, signInWithPopup, signOut,
} from "firebase/auth";

export function start(config, emulatorUrl) {
  const app = initializeApp(config, "jobs_lib_console");
  const auth = getAuth(app);
  if (emulatorUrl) connectAuthEmulator(auth, emulatorUrl, { disableWarnings: true });
  const ready = setPersistence(auth, browserSessionPersistence);
  return {
    async restored() {
      await ready;
      return new Promise((resolve) => {
        const stop = onAuthStateChanged(auth, (user) => { stop(); resolve(Boolean(user)); });
      });
    },
    async signInWithEmail(email, password) {
      await ready;
      await signInWithEmailAndPassword(auth, email, password);
    },
    async signInWithGoogle() {
      await ready;
      await signInWithPopup(auth, new GoogleAuthProvider());
    },
    async getToken() {
      // The SDK refreshes the ID token (an hour's lifetime) before it expires.
      return auth.currentUser ? auth.currentUser.getIdToken() : null;
    },
    signOut() {
      return signOut(auth);
    },
  };
}
