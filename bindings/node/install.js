'use strict';
// The install step of the packed npm package (scripts/package-node.sh adds
// it as the "install" script): keep the prebuilt library when one fits this
// platform and loads, else build it from the crate the package carries
// (native/) with cargo into build/. Fails loudly rather than leaving a
// package that cannot load its library.
//   FLOWMESH_LIB=/path/libflowmesh.so   use that library, build nothing
//   FLOWMESH_BUILD_FROM_SOURCE=1        ignore the prebuilt library
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const LIB = 'libflowmesh.so';
const say = (m) => console.log(`flowmesh: ${m}`);

function fail(m) {
  console.error(`flowmesh: ${m}`);
  process.exit(1);
}

function main() {
  if (process.env.FLOWMESH_LIB) {
    if (!fs.existsSync(process.env.FLOWMESH_LIB)) fail(`FLOWMESH_LIB=${process.env.FLOWMESH_LIB} does not name a file`);
    say(`using FLOWMESH_LIB=${process.env.FLOWMESH_LIB}`);
    return;
  }
  const prebuilt = path.join(__dirname, 'prebuilds', `${process.platform}-${process.arch}`, LIB);
  if (process.env.FLOWMESH_BUILD_FROM_SOURCE !== '1' && fs.existsSync(prebuilt)) {
    try {
      require('koffi').load(prebuilt);
      return; // fits: nothing to do
    } catch (err) {
      say(`the prebuilt library does not load here (${err.message}): building from source`);
    }
  } else {
    say(`no prebuilt library for ${process.platform}-${process.arch}: building from source`);
  }
  const crate = path.join(__dirname, 'native');
  if (!fs.existsSync(path.join(crate, 'Cargo.toml'))) fail(`the crate is missing from ${crate}: cannot build ${LIB}`);
  try {
    execFileSync('cargo', ['--version'], { stdio: 'ignore' });
  } catch {
    fail(`building ${LIB} needs cargo (https://rustup.rs) on PATH, or FLOWMESH_LIB naming a built library`);
  }
  execFileSync('cargo', ['build', '--release', '--lib', '--locked'], { cwd: crate, stdio: 'inherit' });
  const meta = JSON.parse(execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], { cwd: crate }));
  const built = path.join(meta.target_directory, 'release', LIB);
  if (!fs.existsSync(built)) fail(`${built} is missing after the build`);
  fs.mkdirSync(path.join(__dirname, 'build'), { recursive: true });
  fs.copyFileSync(built, path.join(__dirname, 'build', LIB));
  say(`built ${path.join(__dirname, 'build', LIB)}`);
}

main();
