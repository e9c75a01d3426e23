// Regenerates the server types under src/lexicon/ and the Markdown reference under docs/
// from lexicons/. Runs before build, start and test so a lexicon change never ships with
// stale types. Generated output is never edited by hand.
import { execFileSync } from 'node:child_process'
import { readdirSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const lexiconDir = join(root, 'lexicons')
const generatedDir = join(root, 'src', 'lexicon')
const docsFile = join(root, 'docs', 'lexicons.md')

function listJson(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) return listJson(path)
    return name.endsWith('.json') ? [path] : []
  })
}

const files = listJson(lexiconDir).sort()
const lex = join(root, 'node_modules', '.bin', 'lex')
const quiet = { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] }

rmSync(generatedDir, { recursive: true, force: true })
execFileSync(lex, ['gen-server', '--yes', generatedDir, ...files], quiet)

mkdirSync(join(root, 'docs'), { recursive: true })
writeFileSync(
  docsFile,
  '# Lexicon reference\n\nGenerated from `lexicons/` by `npm run codegen`; do not edit by hand.\n\n' +
    '<!-- START lex generated content -->\n<!-- END lex generated content -->\n',
)
execFileSync(lex, ['gen-md', '--yes', docsFile, ...files], quiet)
console.log(`codegen: ${files.length} lexicons -> ${relative(root, generatedDir)}/, ${relative(root, docsFile)}`)
