#!/usr/bin/env node
// The entry point. It checks the Node version before loading anything else: the libraries
// fail at import time on older versions, with errors that say nothing about the cause.
const nodeMajor = Number(process.versions.node.split('.')[0])
if (nodeMajor < 22) {
  process.stderr.write(
    `atm-tickets needs Node.js 22 or newer (this is ${process.version}): start it with \`npm start\`, which uses the project's own Node 24\n`,
  )
  process.exit(2)
}
const { run } = await import('./cli.js')
run()
