import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import registerApp from './admin/registerApp.js'
import archiveTicketTier from './archiveTicketTier.js'
import checkInTicket from './checkInTicket.js'
import claimFreeTicket from './claimFreeTicket.js'
import completePaymentSetup from './completePaymentSetup.js'
import createCapacityGroup from './createCapacityGroup.js'
import createCheckInList from './createCheckInList.js'
import createTicketEvent from './createTicketEvent.js'
import createTicketHold from './createTicketHold.js'
import createTicketTier from './createTicketTier.js'
import getTicketAvailability from './getTicketAvailability.js'
import getTicketHold from './getTicketHold.js'
import listBuyerTickets from './listBuyerTickets.js'
import listCheckInLists from './listCheckInLists.js'
import listOrganizerTickets from './listOrganizerTickets.js'
import refundTickets from './refundTickets.js'
import registerOrganizer from './registerOrganizer.js'
import releaseTicketHold from './releaseTicketHold.js'
import updateCapacityGroup from './updateCapacityGroup.js'
import updateTicketEvent from './updateTicketEvent.js'
import updateTicketTier from './updateTicketTier.js'
import verifyTicket from './verifyTicket.js'
import voidTickets from './voidTickets.js'

export function registerMethods(server: Server, ctx: AppContext): void {
  for (const register of [
    registerApp,
    registerOrganizer,
    completePaymentSetup,
    createTicketEvent,
    updateTicketEvent,
    createCapacityGroup,
    updateCapacityGroup,
    createTicketTier,
    updateTicketTier,
    archiveTicketTier,
    getTicketAvailability,
    createTicketHold,
    releaseTicketHold,
    getTicketHold,
    claimFreeTicket,
    listBuyerTickets,
    listOrganizerTickets,
    verifyTicket,
    checkInTicket,
    createCheckInList,
    listCheckInLists,
    voidTickets,
    refundTickets,
  ]) {
    register(server, ctx)
  }
}
