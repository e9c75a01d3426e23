// Everything the tests share, from one import: `from './helpers/index.js'`.
export * from './port.js'
export * from './plc.js'
export * from './identity.js'
export * from './didweb.js'
export * from './jwt.js'
export * from './xrpc.js'
export * from './service.js'
export * from './expect.js'
