"""The local stack: the Firestore and Auth emulators, `jobs dev`, `jobs demo`, the example web app's
server."""
