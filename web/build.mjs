// Builds the interview page into one output directory: content-hashed ES modules and CSS, their
// gzip twins, the licences of every bundled package, and manifest.json (written last, so a
// directory with a manifest is a complete bundle).
//
//   node build.mjs --outdir DIR [--source-hash HASH]
import { build } from 'esbuild'
import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, readdirSync, existsSync, writeFileSync } from 'node:fs'
import { join, dirname, basename } from 'node:path'
import { gzipSync } from 'node:zlib'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const args = process.argv.slice(2)
const arg = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined }
const outdir = arg('--outdir')
if (!outdir) { console.error('usage: node build.mjs --outdir DIR [--source-hash HASH]'); process.exit(2) }
mkdirSync(outdir, { recursive: true })

const ENTRIES = ['editor.js', 'home.js', 'page.css']
const started = performance.now()
const result = await build({
  entryPoints: { editor: join(here, 'src/editor.js'), home: join(here, 'src/home.js'), page: join(here, 'src/page.css') },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  minify: true,
  target: ['chrome110', 'firefox115', 'safari16'],
  entryNames: '[name]-[hash]',
  chunkNames: 'chunk-[hash]',
  legalComments: 'none',
  metafile: true,
  logLevel: 'warning',
})

const entries = {}
const files = []
for (const [path, info] of Object.entries(result.metafile.outputs)) {
  const name = basename(path)
  files.push(name)
  // Only our own entry points (esbuild also marks dynamically imported modules as entries).
  const entry = ENTRIES.find((e) => info.entryPoint && info.entryPoint.endsWith(`src/${e}`))
  if (entry) entries[entry] = name
}

// Every package that contributed an input file, with the licence its package.json declares.
const packages = new Map()
for (const input of Object.keys(result.metafile.inputs)) {
  const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//)
  if (m) packages.set(m[1], join(here, 'node_modules', m[1]))
}
let licences = 'Third-party packages bundled into the crdt-server interview page\n\n'
for (const [name, dir] of [...packages].sort()) {
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
  const licence = typeof pkg.license === 'string' ? pkg.license : (pkg.license?.type ?? 'UNKNOWN')
  licences += `${'='.repeat(72)}\n${name} ${pkg.version}  —  ${licence}\n`
  if (pkg.homepage || pkg.repository) licences += `${pkg.homepage ?? pkg.repository?.url ?? pkg.repository}\n`
  const file = readdirSync(dir).find((f) => /^(licen[cs]e|copying)(\.|$)/i.test(f))
  licences += file ? `\n${readFileSync(join(dir, file), 'utf8').trim()}\n\n` : '\n'
}
const licenceName = `licenses-${createHash('sha256').update(licences).digest('hex').slice(0, 12)}.txt`
writeFileSync(join(outdir, licenceName), licences)
files.push(licenceName)
entries['licenses.txt'] = licenceName

let raw = 0
let gzipped = 0
for (const name of files) {
  const data = readFileSync(join(outdir, name))
  const gz = gzipSync(data, { level: 9 })
  writeFileSync(join(outdir, `${name}.gz`), gz)
  if (name.endsWith('.js')) { raw += data.length; gzipped += gz.length }
}

const manifest = {
  sourceHash: arg('--source-hash') ?? null,
  builtAt: new Date().toISOString(),
  entries,
  files: files.sort(),
  packages: [...packages.keys()].sort(),
  javascriptBytes: raw,
  javascriptGzipBytes: gzipped,
  buildMs: Math.round(performance.now() - started),
}
if (!existsSync(join(outdir, entries['editor.js']))) throw new Error('editor entry missing from the build')
writeFileSync(join(outdir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n')
console.log(`built ${Object.keys(entries).length} entries, ${files.length} files: JavaScript ${(raw / 1024).toFixed(0)} KiB, ` +
  `${(gzipped / 1024).toFixed(0)} KiB gzipped, in ${manifest.buildMs} ms`)
